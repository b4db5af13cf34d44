// Trunks: the SIP trunks to carriers and their state now (GET /api/trunks, docs/sip.md,
// "Console"), polled every two seconds. Admins only. "Refusing" means the trunk has refused
// calls at its limits since it last took one: a toll-fraud guard worth a look.

import { api, boot, el, section, showError, table } from "./common.js";

const POLL_MS = 2000;

function statePill(state) {
  const kind = state === "refusing" ? "poor" : state === "in use" ? "good" : "";
  const label = state.charAt(0).toUpperCase() + state.slice(1);
  return el("span", { class: `pill ${kind}`.trim() }, label);
}

function reachablePill(t) {
  const kind = t.reachable === "down" ? "poor" : t.reachable === "up" ? "good" : "";
  const o = t.options;
  const detail = !o ? "" : o.rtt_ms != null && t.reachable === "up" ? ` (${o.rtt_ms} ms)` : o.failures ? ` (${o.failures} unanswered)` : "";
  const label = t.reachable.charAt(0).toUpperCase() + t.reachable.slice(1) + detail;
  return el("span", { class: `pill ${kind}`.trim(), dataset: { reachable: t.reachable } }, label);
}

function row(t) {
  const auth = t.carrier_auth ? `digest as ${t.carrier_auth.username}` : "by address";
  return el(
    "tr",
    { dataset: { trunk: t.name, state: t.state } },
    el("td", {}, t.name),
    el("td", {}, statePill(t.state)),
    el("td", {}, reachablePill(t)),
    el("td", { class: "num" }, `${t.calls} / ${t.max_calls}`),
    el("td", { class: "num" }, `${t.attempts.inbound} / ${t.attempts.outbound}`),
    el("td", { class: "num" }, `${t.refused.calls} / ${t.refused.rate} / ${t.refused.users}` +
      (t.refused.unavailable ? ` (+${t.refused.unavailable} with the cluster's limits unreachable)` : "")),
    el("td", {}, t.outbound || "inbound only"),
    el("td", {}, t.routes.join(", ") || "—"),
    el("td", {}, t.dial_out_groups.join(", ") || "nobody (emergency only)"),
    el("td", {}, `${t.addresses.join(", ")}; ${t.dids} DID(s)` +
      (t.ring_groups.length ? `; ringing groups ${t.ring_groups.join(", ")}` : "")),
    el("td", {}, auth),
    el("td", {}, t.srtp === "required" ? "SRTP (SDES) required" : "RTP, or SRTP if it offers"),
  );
}

boot(["admin"], async (_user, content) => {
  const holder = el("div", { id: "trunks-table" });
  const note = el("p", { class: "muted" },
    "Calls now / limit; attempts inbound / outbound and refusals at the channel / rate / per-user dial-out limits since the server started (this node's: with several nodes the limits are the cluster's).");
  content.replaceChildren(section("Trunks", note, holder));
  let timer = null;

  async function refresh() {
    let body;
    try {
      body = await api("/api/trunks");
    } catch (err) {
      showError(holder, err, "Trunks", "GET /api/trunks");
      if (err.status === 404 || err.status === 403) clearInterval(timer);
      return;
    }
    if (!body.sip) {
      holder.replaceChildren(el("p", { class: "muted" }, "This server has no SIP edge (set sip.listen)."));
      return;
    }
    const headers = ["Trunk", "State", "Carrier answers", "Calls", "Attempts in / out", "Refused channels / rate / per user",
      "Carrier", "Routes", "May dial out", "Inbound from", "Authentication", "Media"];
    holder.replaceChildren(
      body.trunks.length ? table(headers, body.trunks.map(row), "SIP trunks") : el("p", { class: "muted" }, "No trunks configured."),
    );
  }

  await refresh();
  timer = setInterval(refresh, POLL_MS);
});
