// One call in full: summary, timeline, policy, relay sessions, quality per stream, audit events.

import { formatDuration, formatTime } from "../api.js";
import { dispositionLabel } from "../reasons.js";
import { $, api, boot, el, qualityPill, recordingPlayer, section, showError, table } from "./common.js";

function kv(pairs) {
  return el("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "—")]));
}

function timeline(cdr, events) {
  const steps = [
    [cdr.invite_at, `${cdr.caller_user} called ${cdr.callee_user}`],
    [cdr.ring_at, "Ringing"],
    [cdr.answer_at, "Answered"],
    [cdr.end_at, `Ended: ${cdr.reason || dispositionLabel(cdr.disposition)}${cdr.ended_by ? ` (by ${cdr.ended_by})` : ""}`],
  ].filter(([at]) => at);
  for (const e of events) steps.push([e.at, `${e.action} by ${e.actor}`, e]);
  steps.sort((a, b) => new Date(a[0]) - new Date(b[0]));
  return el(
    "ol",
    { class: "timeline" },
    steps.map(([at, text, entry]) =>
      el("li", {}, el("time", { datetime: at }, formatTime(at)), " — ", text,
        entry ? el("details", {}, el("summary", {}, `audit #${entry.seq}`), el("pre", {}, JSON.stringify(entry.details, null, 2))) : null),
    ),
  );
}

function qualityTable(rows) {
  if (!rows.length) return el("p", { class: "muted" }, "No quality reports for this call.");
  return table(
    ["Reported by", "Direction", "Packets", "Lost", "Loss", "Jitter", "RTT", "Concealed", "MOS", "Verdict"],
    rows.map((q) =>
      el("tr", {},
        el("td", {}, q.reporter),
        el("td", {}, q.direction),
        el("td", { class: "num" }, q.packets),
        el("td", { class: "num" }, q.packets_lost),
        el("td", { class: "num" }, `${(q.loss_rate * 100).toFixed(1)} %`),
        el("td", { class: "num" }, q.jitter_ms === null ? "—" : `${q.jitter_ms.toFixed(1)} ms`),
        el("td", { class: "num" }, q.rtt_ms === null ? "—" : `${q.rtt_ms.toFixed(0)} ms`),
        el("td", { class: "num" }, q.concealed_ratio === null ? "—" : `${(q.concealed_ratio * 100).toFixed(1)} %`),
        el("td", { class: "num" }, q.mos.toFixed(2)),
        el("td", {}, qualityPill({ classification: q.classification, poor_reasons: q.poor_reasons })))),
    "Quality per stream",
  );
}

function relayTable(rows) {
  if (!rows.length) return el("p", { class: "muted" }, "No relay sessions linked to this call.");
  return table(
    ["User", "Transport", "Client", "Relay address", "Started", "Ended", "Bytes to peer", "Bytes to client", "Peers"],
    rows.map((r) =>
      el("tr", {},
        el("td", {}, r.user),
        el("td", {}, r.transport),
        el("td", {}, r.client),
        el("td", {}, r.relay),
        el("td", {}, formatTime(r.started_at)),
        el("td", {}, r.ended_at ? `${formatTime(r.ended_at)} (${r.end_reason || "ended"})` : "open"),
        el("td", { class: "num" }, r.bytes_to_peer),
        el("td", { class: "num" }, r.bytes_to_client),
        el("td", {}, (r.peers || []).join(", ")))),
    "Relay sessions",
  );
}

// The call's recordings (docs/recording.md): each played on demand, decoded by the server as a
// stereo WAV (caller left, callee right); every playback is audited.
function recordingsSection(ids) {
  if (!ids.length) return null;
  return section("Recording", ...ids.map((id) => {
    const holder = el("div", { class: "recording", "data-recording-id": id });
    const play = el("button", { type: "button" }, "Play recording");
    play.addEventListener("click", async () => {
      play.disabled = true;
      try {
        const audio = await recordingPlayer(id, `Recording ${id}`);
        holder.replaceChildren(audio, el("p", { class: "muted" }, "Caller left, callee right."));
      } catch (err) {
        showError(holder, err, "The recording", "POST /api/recordings/{id}/playback");
      }
    });
    holder.append(el("code", {}, id), " ", play);
    return holder;
  }));
}

boot(["admin", "compliance"], async (_user, content) => {
  const callId = $("main").dataset.callId;
  let body;
  try {
    body = await api(`/api/cdrs/${encodeURIComponent(callId)}`);
  } catch (err) {
    const holder = el("div");
    if (err.status === 404 && err.message !== "Not Found") holder.append(el("p", { class: "error", role: "alert" }, `No call ${callId}.`));
    else showError(holder, err, "The call detail", "GET /api/cdrs/{call_id}");
    content.replaceChildren(holder);
    return;
  }
  const { cdr, quality, relay_sessions: relays, events } = body;
  $("page-title").textContent = `Call ${cdr.caller_user} → ${cdr.callee_user}`;
  content.replaceChildren(
    el("p", {}, el("a", { href: "/console/records" }, "← Back to the records")),
    el("div", { class: "grid2" },
      section("Summary", kv([
        ["Call id", el("code", {}, cdr.call_id)],
        ["Caller", `${cdr.caller_user}${cdr.caller_address ? ` from ${cdr.caller_address}` : ""}`],
        ["Callee", `${cdr.callee_user}${cdr.callee_address ? ` from ${cdr.callee_address}` : ""}`],
        ["Result", `${dispositionLabel(cdr.disposition)}${cdr.reason ? ` (${cdr.reason})` : ""}`],
        ["Ended by", cdr.ended_by],
        ["Duration", cdr.disposition === "answered" ? formatDuration(cdr.duration_s) : "—"],
        ["Media path", cdr.media_path],
        ["Codec", cdr.codec],
        ["Encryption", cdr.encryption],
        ["Relay bytes", cdr.relay_bytes],
        ["Legal hold", cdr.legal_hold ? "yes" : "no"],
      ])),
      section("Policy", kv([
        ["Decision", cdr.policy_decision],
        ["Rule that applied", cdr.policy_rule || "default action"],
        ["Recording required", cdr.recording_required ? "yes" : "no"],
        ["Media anchored", cdr.anchored ? "yes (through the server)" : "no (end to end)"],
      ]), el("h3", {}, "Timeline"), timeline(cdr, events || []))),
    recordingsSection(cdr.recording_ids || []) ?? "",
    section("Quality per stream", qualityTable(quality || [])),
    section("Relay sessions", relayTable(relays || [])),
  );
});
