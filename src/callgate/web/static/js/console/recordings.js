// Compliance recordings (docs/recording.md): each with its retention date, what holds it, its WORM
// archive copy; playback, the export bundle, and — for compliance officers — putting or lifting a
// legal hold with a reason. Every playback, export and hold change is audited by the server.

import { formatTime } from "../api.js";
import { api, boot, download, el, section, showError, status, table } from "./common.js";

// A retention date is years away: show the year.
function formatDate(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
}

const HOLDERS = { recording: "this recording", call: "its call" };

function holdText(r) {
  const why = (r.held_by || []).map((h) => HOLDERS[h] || `party ${h.slice(5)}`);
  if (!why.length) return el("span", { class: "muted" }, "No");
  return el("span", {}, el("strong", {}, "Held"), ` by ${why.join(", ")}`, r.hold_reason ? ` — ${r.hold_reason}` : "");
}

function archiveText(r) {
  const a = r.archive;
  if (!a) return el("span", { class: "muted" }, r.state === "open" ? "—" : "Not yet");
  // the S3 legal hold follows the hold at the archive's next run (docs/recording.md)
  const held = (r.held_by || []).length > 0;
  const s3hold = a.legal_hold
    ? held ? " · S3 legal hold on" : " · S3 legal hold on (being lifted)"
    : held ? " · S3 legal hold pending" : "";
  return el("span", { title: `s3://${a.bucket}/${a.key}` }, `Archived ${formatTime(a.at)} (WORM, ${a.bucket})${s3hold}`);
}

function player(r) {
  const holder = el("div", { class: "recording-actions" });
  if (r.state === "open") return holder;
  const play = el("button", { class: "btn small", type: "button" }, "Play");
  play.addEventListener("click", async () => {
    play.disabled = true;
    try {
      const response = await api(`/api/recordings/${r.recording_id}/audio`, { raw: true });
      const url = URL.createObjectURL(await response.blob());
      holder.replaceChildren(el("audio", { controls: "", src: url, "aria-label": `Recording ${r.recording_id}` }));
    } catch (err) {
      showError(holder, err, "The recording", "GET /api/recordings/{id}/audio");
    }
  });
  const bundle = el("button", { class: "btn small", type: "button" }, "Export bundle");
  bundle.addEventListener("click", async () => {
    bundle.disabled = true;
    try {
      await download(`/api/recordings/${r.recording_id}/bundle`, `recording-${r.recording_id}.tar`);
    } catch (err) {
      status(`The export could not be made: ${err.message}`);
    } finally {
      bundle.disabled = false;
    }
  });
  holder.append(play, " ", bundle);
  return holder;
}

// Put or lift the recording's own legal hold, with the reason (the matter or case) — compliance only.
function holdForm(r, reload) {
  const held = r.legal_hold;
  const reason = el("input", {
    name: "reason", maxlength: "255", autocomplete: "off", placeholder: held ? "Why it is lifted" : "Matter or case",
    "aria-label": held ? `Reason to lift the hold on ${r.recording_id}` : `Reason to hold ${r.recording_id}`,
  });
  const error = el("p", { class: "error", role: "alert" });
  const form = el("form", { class: "hold-form", novalidate: "" }, reason,
    el("button", { class: `btn small${held ? "" : " primary"}`, type: "submit" }, held ? "Lift hold" : "Put on hold"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      await api(`/api/recordings/${r.recording_id}/legal-hold`, { method: "PUT", body: { hold: !held, reason: reason.value.trim() || null } });
      status(held ? "The legal hold was lifted." : "The recording is on legal hold.", "ok");
      await reload();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  return form;
}

// The recorder's and the WORM archive's health from /healthz (docs/recording.md, "Health").
async function recordingHealth() {
  let body;
  try {
    const response = await fetch("/healthz");
    body = await response.json();
  } catch {
    return [el("p", { class: "notice error", role: "alert" }, "The server's health could not be read.")];
  }
  const out = [];
  const r = body.call_recording;
  if (r) {
    out.push(r.ok
      ? el("p", { class: "notice ok", id: "recorder-health" }, `Recorder: ready · ${r.active} call${r.active === 1 ? "" : "s"} being recorded · ${r.failed} failed since the server started.`)
      : el("p", { class: "notice error", id: "recorder-health", role: "alert" }, `Recorder: not available — ${r.error || "see the server log"}. Calls that must be recorded do not connect.`));
  }
  const a = body.recording_archive;
  if (a) {
    out.push(a.ok
      ? el("p", { class: "notice ok", id: "archive-health" }, "WORM archive: up to date.")
      : el("p", { class: "notice error", id: "archive-health", role: "alert" }, `WORM archive: ${a.error}`));
  }
  return out;
}

boot(["admin", "compliance"], async (user, content) => {
  const officer = user.role === "compliance";
  const listing = el("div", { id: "recordings-list" }, "Loading…");
  const health = el("div");
  async function reload() {
    let rows;
    try {
      rows = await api("/api/recordings?limit=200");
    } catch (err) {
      showError(listing, err, "The recordings", "GET /api/recordings");
      return;
    }
    const headers = ["Recording", "Call", "Started", "State", "Retained until", "Legal hold", "WORM archive", "Listen", ...(officer ? ["Hold"] : [])];
    listing.replaceChildren(
      rows.length
        ? table(headers, rows.map((r) =>
            el("tr", { dataset: { recordingId: r.recording_id } },
              el("td", {}, el("code", {}, r.recording_id.slice(0, 8))),
              el("td", {}, el("a", { href: `/console/records/${r.call_id}` }, "Call record")),
              el("td", {}, formatTime(r.started_at)),
              el("td", {}, r.state + (r.failure ? ` (${r.failure})` : "")),
              el("td", { class: "retain" }, r.retain_until ? el("time", { datetime: r.retain_until }, formatDate(r.retain_until)) : "—"),
              el("td", { class: "hold" }, holdText(r)),
              el("td", { class: "archive" }, archiveText(r)),
              el("td", {}, player(r)),
              officer ? el("td", {}, holdForm(r, reload)) : null)), "Recordings")
        : el("p", { class: "muted" }, "No recordings yet."),
    );
    health.replaceChildren(...(await recordingHealth()));
  }
  content.replaceChildren(
    health,
    section("Recordings", el("p", { class: "muted" },
      "Newest first. A recording is kept until its date, and past it while any legal hold (on it, its call or a party) lasts. ",
      officer ? "Put a hold on a recording with the matter or case it is for; every change is audited." : "Only compliance officers can put or lift a legal hold."),
      listing),
  );
  await reload();
});
