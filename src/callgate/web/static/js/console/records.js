// Call records: search and filter the CDRs, page through them, export CSV / JSON Lines.

import { formatDuration, formatTime } from "../api.js";
import { dispositionLabel, DISPOSITIONS } from "../reasons.js";
import { api, boot, download, el, field, isMissingRoute, qualityPill, queryOf, section, showError, status, table } from "./common.js";

const FILTERS = ["party", "since", "until", "disposition", "poor", "limit"];

function filterForm(onSearch, onExport, canExport) {
  const disposition = el("select", { name: "disposition", id: "f-disposition" },
    el("option", { value: "" }, "Any result"),
    Object.entries(DISPOSITIONS).map(([value, label]) => el("option", { value }, label)));
  const poor = el("select", { name: "poor", id: "f-poor" },
    el("option", { value: "" }, "Any quality"),
    el("option", { value: "true" }, "Poor calls only"),
    el("option", { value: "false" }, "Good calls only"));
  const form = el(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter call records" },
    field("Party (user name)", el("input", { name: "party", id: "f-party", autocomplete: "off", spellcheck: "false" })),
    field("From", el("input", { name: "since", id: "f-since", type: "datetime-local" })),
    field("Until", el("input", { name: "until", id: "f-until", type: "datetime-local" })),
    field("Result", disposition),
    field("Quality", poor),
    field("Rows per page", el("input", { name: "limit", id: "f-limit", type: "number", min: "1", max: "1000", value: "50" })),
    el("div", {}, el("button", { class: "btn primary", type: "submit" }, "Search")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onSearch(form);
  });
  const exports = el("div", { class: "toolbar" },
    el("span", { class: "muted" }, "Export the records matching these filters:"),
    el("button", { class: "btn small", type: "button", disabled: !canExport, onclick: () => onExport(form, "csv") }, "Export CSV"),
    el("button", { class: "btn small", type: "button", disabled: !canExport, onclick: () => onExport(form, "jsonl") }, "Export JSON Lines"));
  return [form, exports];
}

// Per call: the worst stream verdict and the lowest MOS, from GET /api/quality.
async function qualityByCall(items) {
  const byCall = new Map();
  if (!items.length) return byCall;
  const oldest = items.reduce((min, c) => (c.invite_at < min ? c.invite_at : min), items[0].invite_at);
  try {
    const body = await api(`/api/quality?limit=1000&since=${encodeURIComponent(oldest)}`);
    for (const q of body.items) {
      const seen = byCall.get(q.call_id) || { classification: "good", mos: q.mos, poor_reasons: [] };
      if (q.classification === "poor") {
        seen.classification = "poor";
        seen.poor_reasons = [...new Set([...seen.poor_reasons, ...q.poor_reasons])];
      }
      seen.mos = Math.min(seen.mos, q.mos);
      byCall.set(q.call_id, seen);
    }
  } catch {
    // no quality endpoint (or not allowed): the column stays empty
  }
  return byCall;
}

function recordRow(c, quality) {
  return el(
    "tr",
    { dataset: { callId: c.call_id } },
    el("td", {}, el("a", { href: `/console/records/${encodeURIComponent(c.call_id)}` }, formatTime(c.invite_at))),
    el("td", {}, c.caller_user),
    el("td", {}, c.callee_user),
    el("td", {}, dispositionLabel(c.disposition), c.reason ? el("span", { class: "muted" }, ` (${c.reason})`) : null),
    el("td", { class: "num" }, c.disposition === "answered" ? formatDuration(c.duration_s) : "—"),
    el("td", {}, c.media_path || "—"),
    el("td", {}, c.policy_rule || "—"),
    el("td", {}, qualityPill(quality.get(c.call_id))),
  );
}

boot(["admin", "compliance"], async (_user, content) => {
  const results = el("div", { id: "records-results" });
  const summary = el("p", { id: "records-summary", role: "status", "aria-live": "polite" });
  const more = el("button", { class: "btn", type: "button", hidden: true }, "Load more");
  let cursor = null;
  let lastQuery = null;
  let rows = [];

  async function load(params, append) {
    const query = new URLSearchParams(params);
    if (append && cursor) query.set("cursor", cursor);
    let body;
    try {
      body = await api(`/api/cdrs?${query}`);
    } catch (err) {
      showError(results, err, "Searching the records", "GET /api/cdrs");
      summary.textContent = "";
      more.hidden = true;
      return;
    }
    rows = append ? rows.concat(body.items) : body.items;
    const quality = await qualityByCall(rows);
    cursor = body.next_cursor;
    more.hidden = !cursor;
    summary.textContent = rows.length === 1 ? "1 call found" : `${rows.length} calls found${cursor ? " (more available)" : ""}`;
    results.replaceChildren(
      rows.length
        ? table(["When", "Caller", "Callee", "Result", "Duration", "Media path", "Policy rule", "Quality"], rows.map((c) => recordRow(c, quality)), "Call records")
        : el("p", { class: "muted" }, "No calls match these filters."),
    );
  }

  async function search(form) {
    lastQuery = queryOf(form, FILTERS);
    cursor = null;
    await load(lastQuery, false);
  }

  async function exportRecords(form, format) {
    const query = queryOf(form, FILTERS.filter((f) => f !== "limit"));
    query.set("format", format);
    try {
      const size = await download(`/api/cdrs/export?${query}`, `cdrs.${format === "csv" ? "csv" : "jsonl"}`);
      status(`Export downloaded (${size} bytes). The export is recorded in the audit log.`, "ok");
    } catch (err) {
      status(isMissingRoute(err) ? "Export is not available on this server yet (GET /api/cdrs/export is missing)." : `Export failed: ${err.message}`);
    }
  }

  more.addEventListener("click", () => load(lastQuery, true));
  const [form, exports] = filterForm(search, exportRecords, true);
  content.replaceChildren(section("Search", form, exports), section("Results", summary, results, more));
  await search(form);
});
