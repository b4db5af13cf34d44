// Live calls: polled every 2 s; an admin can end a call.

import { formatDuration } from "../api.js";
import { api, boot, el, qualityPill, section, showError, status, table } from "./common.js";

const POLL_MS = 2000;
const STATES = { ringing: "Ringing", connecting: "Connecting", connected: "Connected" };

export function party(value) {
  if (!value) return "—";
  if (typeof value === "string") return value;
  return value.display_name ? `${value.display_name} (${value.handle})` : value.handle || JSON.stringify(value);
}

function relayOf(value) {
  if (!value) return "—";
  if (typeof value === "string") return value;
  return value.name || value.address || value.listen || JSON.stringify(value);
}

boot(["admin", "compliance"], async (user, content) => {
  const summary = el("p", { id: "live-summary", role: "status", "aria-live": "polite" }, "Loading…");
  const holder = el("div", { id: "live-table" });
  content.replaceChildren(section("Calls in progress", summary, holder));
  let timer = null;
  let fetchedAt = Date.now();

  async function endCall(call) {
    const who = `${party(call.caller)} → ${party(call.callee)}`;
    if (!window.confirm(`End the call ${who} now? Both parties will be disconnected.`)) return;
    try {
      await api(`/api/live-calls/${encodeURIComponent(call.call_id)}/end`, { method: "POST" });
      status(`Ended the call ${who}.`, "ok");
    } catch (err) {
      status(err.status === 404 ? "That call had already ended." : `Could not end the call: ${err.message}`);
    }
    await refresh();
  }

  function row(call) {
    const base = typeof call.duration_s === "number" ? call.duration_s : null;
    const duration = el("td", { class: "num", dataset: { base: base ?? "" } }, formatDuration(base));
    return el(
      "tr",
      { dataset: { callId: call.call_id, state: call.state } },
      el("td", {}, party(call.caller)),
      el("td", {}, call.trunk ? `${party(call.callee)} (trunk ${call.trunk})` : party(call.callee)),
      el("td", {}, STATES[call.state] || call.state),
      duration,
      el("td", {}, call.media_path || "—"),
      el("td", {}, relayOf(call.relay)),
      el("td", {}, qualityPill(call.quality)),
      user.role === "admin"
        ? el("td", {}, el("button", { class: "btn danger small", type: "button", "aria-label": `End call ${party(call.caller)} to ${party(call.callee)}`, onclick: () => endCall(call) }, "End call"))
        : null,
    );
  }

  async function refresh() {
    let body;
    try {
      body = await api("/api/live-calls");
    } catch (err) {
      showError(holder, err, "The live view", "GET /api/live-calls");
      summary.textContent = "";
      if (err.status === 404 || err.status === 405) clearInterval(timer);
      return;
    }
    fetchedAt = Date.now();
    const calls = body.calls || [];
    summary.textContent = calls.length === 1 ? "1 call in progress" : `${calls.length} calls in progress`;
    const headers = ["Caller", "Callee", "State", "Duration", "Media path", "Relay", "Quality"];
    if (user.role === "admin") headers.push("Action");
    holder.replaceChildren(
      calls.length ? table(headers, calls.map(row), "Calls in progress") : el("p", { class: "muted" }, "No calls in progress."),
    );
  }

  // Durations tick every second between polls.
  setInterval(() => {
    const extra = (Date.now() - fetchedAt) / 1000;
    for (const cell of holder.querySelectorAll("td[data-base]")) {
      if (cell.dataset.base !== "") cell.textContent = formatDuration(Number(cell.dataset.base) + extra);
    }
  }, 1000);
  await refresh();
  timer = setInterval(refresh, POLL_MS);
});
