// Unmanaged calling: what the monitor inside `serve` found (GET /api/findings). Pushed: each
// request is a long poll (`after` = the version shown, `wait` = 25 s) that the server answers the
// moment the monitor stores something, and the monitor writes a host/application seen for the
// first time at once (docs/detection.md, "Inside serve"). Security officers and admins only.

import { formatTime } from "../api.js";
import { api, boot, download, el, section, showError, status, table } from "./common.js";

const WAIT_S = 25; // longest long poll (the server's cap)
const MIN_SPACING_MS = 1000; // between two requests that brought nothing new (or failed)

function volume(bytes) {
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
  if (bytes >= 1 << 10) return `${(bytes / (1 << 10)).toFixed(1)} KiB`;
  return `${bytes} B`;
}

function monitorLine(m) {
  if (!m || !m.enabled) return "Monitoring is off on this server (set monitor.interface or --monitor IFACE).";
  if (!m.running) return `The monitor on ${m.interface} stopped: ${m.error}`;
  const evicted = m.flows_evicted ? `, ${m.flows_evicted} flows evicted at the cap` : "";
  const drops = m.ring_drops ? `, ${m.ring_drops} packets dropped (capture ring full)` : "";
  const deferred = m.early_deferred ? `, ${m.early_deferred} new findings held for the batch (write cap)` : "";
  return `Watching ${m.interface}: ${m.packets} packets, ${m.flows} flows${evicted}${drops}${deferred}.`;
}

function row(f) {
  return el(
    "tr",
    { dataset: { findingId: String(f.id), sanctioned: String(f.sanctioned) } },
    el("td", {}, f.host),
    el("td", {}, f.app),
    el("td", {}, f.peer),
    el("td", {}, el("span", { class: `pill ${f.sanctioned ? "good" : "poor"}` }, f.sanctioned ? "Sanctioned" : "Unsanctioned")),
    el("td", {}, formatTime(f.first_seen)),
    el("td", {}, formatTime(f.last_seen)),
    el("td", { class: "num" }, `${f.packets_out} / ${f.packets_in}`),
    el("td", { class: "num" }, `${volume(f.bytes_out)} / ${volume(f.bytes_in)}`),
    el("td", {}, f.path),
    el("td", { class: "num", title: (f.evidence || []).join("\n") }, f.confidence.toFixed(2)),
  );
}

boot(["admin", "security"], async (_user, content) => {
  const monitor = el("p", { id: "monitor-status", role: "status", "aria-live": "polite" }, "Loading…");
  const only = el("input", { type: "checkbox", id: "only-unsanctioned" });
  const holder = el("div", { id: "findings-table" });
  const filter = el("label", { for: "only-unsanctioned" }, only, " Unsanctioned only");
  const block = el("button", { class: "btn small", type: "button", onclick: downloadRuleset }, "Download nftables ruleset");
  const tools = el("div", { class: "toolbar" }, filter,
    el("span", { class: "muted" }, "Block the unsanctioned peers and relays found (our relays are never listed):"), block);
  content.replaceChildren(section("Unmanaged calling", monitor, tools, holder));
  let version = null; // the findings table's version shown; null: none yet
  let generation = 0; // bumped by the filter: an answer to an older request is dropped

  async function downloadRuleset() {
    try {
      const size = await download("/api/findings/nftables", "callgate-block.nft");
      status(`Ruleset downloaded (${size} bytes): load it with nft -f FILE. The download is recorded in the audit log.`, "ok");
    } catch (err) {
      status(`Ruleset failed: ${err.message}`);
    }
  }

  // One request; true when it brought something new (the loop then asks again at once).
  async function refresh(wait) {
    const mine = generation;
    const query = [`limit=500`];
    if (only.checked) query.push("unsanctioned=true");
    if (wait && version !== null) query.push(`after=${encodeURIComponent(version)}`, `wait=${WAIT_S}`);
    let body;
    try {
      body = await api(`/api/findings?${query.join("&")}`);
    } catch (err) {
      showError(holder, err, "Unmanaged calling", "GET /api/findings");
      monitor.textContent = "";
      if (err.status === 404 || err.status === 405 || err.status === 403) throw err;
      return false;
    }
    if (mine !== generation) return true;
    const fresh = body.version !== version;
    version = body.version;
    monitor.textContent = monitorLine(body.monitor);
    const findings = body.findings || [];
    const headers = ["Host", "Application", "Peer", "Status", "First seen", "Last seen", "Packets out / in", "Volume out / in", "Path", "Confidence"];
    holder.replaceChildren(
      findings.length ? table(headers, findings.map(row), "Unmanaged calling findings") : el("p", { class: "muted" }, "Nothing found."),
    );
    return fresh;
  }

  only.addEventListener("change", () => {
    generation += 1;
    refresh(false).catch(() => {});
  });
  try {
    await refresh(false);
  } catch (err) {
    return; // the route is missing or refused: shown, nothing to poll
  }
  // the long-poll loop: ends when the route is missing or refused
  (async () => {
    for (;;) {
      const started = Date.now();
      let fresh;
      try {
        fresh = await refresh(true);
      } catch (err) {
        return; // shown by refresh
      }
      const spacing = fresh ? 0 : MIN_SPACING_MS - (Date.now() - started);
      if (spacing > 0) await new Promise((resolve) => setTimeout(resolve, spacing));
    }
  })();
});
