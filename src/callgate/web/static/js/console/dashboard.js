// Dashboard: calls per hour, answered vs failed, poor-call rate, relay traffic (last 24 h).

import { api, boot, el, section, showError } from "./common.js";
import { areaLine, donut, legend, stackedBars } from "./charts.js";

const SERIES = [
  { key: "answered", label: "answered", color: "#17803d" },
  { key: "failed", label: "failed", color: "#d97706" },
  { key: "denied", label: "denied by policy", color: "#b42318" },
];
const REFRESH_MS = 30000;

function hourLabel(iso) {
  const d = new Date(iso);
  return `${String(d.getHours()).padStart(2, "0")}:00`;
}

function megabytes(v) {
  return v >= 1e6 ? `${(v / 1e6).toFixed(1)} MB` : v >= 1e3 ? `${(v / 1e3).toFixed(0)} kB` : `${Math.round(v)} B`;
}

function tile(label, value, id) {
  return el("div", { class: "tile", id }, el("div", { class: "value" }, value), el("div", { class: "label" }, label));
}

async function loadRelays(holder) {
  let body;
  try {
    body = await api("/api/relays");
  } catch (err) {
    showError(holder, err, "Relay load", "GET /api/relays");
    return;
  }
  holder.replaceChildren(
    ...body.relays.map((r) =>
      el("div", { class: "relay-load" },
        el("p", {}, el("strong", {}, r.name), ` · ${(r.listen || []).join(", ")}`),
        el("p", {}, `${r.allocations} allocation${r.allocations === 1 ? "" : "s"} now · ${r.allocations_total} since start`),
        el("p", { class: "muted" }, `in ${megabytes(r.bytes_in)} · out ${megabytes(r.bytes_out)}`))),
  );
}

boot(["admin", "compliance"], async (_user, content) => {
  async function render() {
    let s;
    try {
      s = await api("/api/stats/summary?hours=24");
    } catch (err) {
      const holder = el("div");
      showError(holder, err, "The dashboard", "GET /api/stats/summary");
      content.replaceChildren(holder);
      return;
    }
    const relayLoad = el("div", { id: "relay-load" }, "Loading…");
    loadRelays(relayLoad);
    const total = s.answered + s.failed + s.denied;
    const poor = s.poor_rate === null || s.poor_rate === undefined ? "—" : `${(s.poor_rate * 100).toFixed(1)} %`;
    const slots = s.calls_per_hour.map((h) => ({ ...h, label: hourLabel(h.hour) }));
    const traffic = s.relay_bytes_per_hour.map((h) => ({ label: hourLabel(h.hour), value: h.bytes }));
    const trafficTotal = traffic.reduce((sum, t) => sum + t.value, 0);
    const describe = `${total} calls in the last ${s.hours} hours: ${s.answered} answered, ${s.failed} failed, ${s.denied} denied.`;
    content.replaceChildren(
      el("div", { class: "tiles" },
        tile("Calls now", String(s.live_calls ?? "—"), "tile-live"),
        tile(`Calls, last ${s.hours} h`, String(total), "tile-total"),
        tile("Answered", String(s.answered), "tile-answered"),
        tile("Failed or denied", String(s.failed + s.denied), "tile-failed"),
        tile("Poor-call rate (answered calls)", poor, "tile-poor"),
        tile("Relay traffic", megabytes(trafficTotal), "tile-traffic")),
      el("div", { class: "grid2" },
        section("Calls per hour", el("div", { class: "chart" }, stackedBars(slots, SERIES, { label: `Calls per hour. ${describe}` }), legend(SERIES))),
        section("Answered vs failed", el("div", { class: "chart" },
          donut(SERIES.map((x) => ({ label: x.label, value: s[x.key], color: x.color })), { label: describe, centre: String(total) }),
          legend(SERIES),
          el("p", { class: "muted" }, `Poor-call rate: ${poor} of answered calls had a stream over the poor-call limits (loss > 10 %, jitter > 30 ms, RTT > 500 ms, concealment > 7 %).`)))),
      el("div", { class: "grid2" },
        section("Relay traffic per hour", el("div", { class: "chart" }, areaLine(traffic, { label: `Relay traffic per hour, ${megabytes(trafficTotal)} in total`, format: megabytes }))),
        section("Relay load now", relayLoad)),
      el("p", { class: "muted" }, `Updated ${new Date().toLocaleTimeString()} · refreshes every 30 s.`),
    );
  }
  await render();
  setInterval(render, REFRESH_MS);
});
