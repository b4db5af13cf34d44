// Audit log: filtered entries, checkpoint status, "verify now", exports.

import { formatTime } from "../api.js";
import { api, boot, download, el, field, isMissingRoute, queryOf, section, showError, status, table } from "./common.js";

const FILTERS = ["actor", "action", "object", "after_seq", "limit"];

function entryRow(e) {
  const details = JSON.stringify(e.details);
  return el(
    "tr",
    { dataset: { seq: e.seq } },
    el("td", { class: "num" }, e.seq),
    el("td", {}, formatTime(e.at)),
    el("td", {}, e.actor),
    el("td", {}, el("code", {}, e.action)),
    el("td", {}, e.object),
    el("td", {}, details === "{}" ? "—" : el("details", {}, el("summary", {}, "details"), el("pre", {}, JSON.stringify(e.details, null, 2)))),
  );
}

boot(["admin", "compliance"], async (user, content) => {
  const verifyResult = el("div", { id: "verify-result", role: "status", "aria-live": "polite" });
  const checkpoints = el("div", { id: "checkpoints" });
  const results = el("div", { id: "audit-results" });
  const more = el("button", { class: "btn", type: "button", hidden: true }, "Load more");
  let cursor = null;
  let lastQuery = null;
  let rows = [];

  async function loadCheckpoints() {
    let body;
    try {
      body = await api("/api/audit/checkpoints");
    } catch (err) {
      showError(checkpoints, err, "Checkpoints", "GET /api/audit/checkpoints");
      return;
    }
    const list = body.checkpoints || [];
    if (!list.length) {
      checkpoints.replaceChildren(el("p", { class: "muted" }, "No signed checkpoint yet."));
      return;
    }
    const latest = list[list.length - 1];
    checkpoints.replaceChildren(
      el("p", {}, `${list.length} signed checkpoint${list.length === 1 ? "" : "s"}. Latest: `,
        el("strong", {}, `${latest.size} entries`), ` at ${formatTime(latest.created_at)}, head `,
        el("code", {}, latest.head_hash.slice(0, 16)), "…, key ", el("code", {}, latest.key_id), "."),
    );
  }

  async function verify(button) {
    button.disabled = true;
    verifyResult.replaceChildren(el("p", {}, "Verifying the whole chain…"));
    try {
      const r = await api("/api/audit/verify", { method: "POST" });
      verifyResult.replaceChildren(
        el("p", { class: `notice ${r.ok ? "ok" : "error"}`, dataset: { ok: String(r.ok) } },
          r.ok ? "✔ Verified: " : "✘ Verification failed: ",
          `${r.message}. ${r.entries} entries and ${r.checkpoints} checkpoint${r.checkpoints === 1 ? "" : "s"} checked in ${r.seconds} s.`,
          r.first_bad_seq !== null ? ` First bad entry: #${r.first_bad_seq}.` : ""),
      );
    } catch (err) {
      if (isMissingRoute(err)) verifyResult.replaceChildren(el("p", { class: "unavailable" }, "Verification is not available on this server yet (POST /api/audit/verify is missing)."));
      else verifyResult.replaceChildren(el("p", { class: "notice error" }, `Verification could not run: ${err.message}`));
    } finally {
      button.disabled = false;
    }
    await Promise.all([loadCheckpoints(), search()]);
  }

  async function checkpoint(button) {
    button.disabled = true;
    try {
      const cp = await api("/api/audit/checkpoints", { method: "POST" });
      status(`Signed checkpoint #${cp.id} over ${cp.size} entries.`, "ok");
    } catch (err) {
      status(`No checkpoint: ${err.message}`);
    } finally {
      button.disabled = false;
    }
    await loadCheckpoints();
  }

  async function load(append) {
    const query = new URLSearchParams(lastQuery);
    if (append && cursor) query.set("cursor", cursor);
    let body;
    try {
      body = await api(`/api/audit/entries?${query}`);
    } catch (err) {
      showError(results, err, "The audit log", "GET /api/audit/entries");
      more.hidden = true;
      return;
    }
    rows = append ? rows.concat(body.items) : body.items;
    cursor = body.next_cursor;
    more.hidden = !cursor;
    results.replaceChildren(
      rows.length ? table(["#", "When", "Actor", "Action", "Object", "Details"], rows.map(entryRow), "Audit entries") : el("p", { class: "muted" }, "No entries match."),
    );
  }

  const form = el(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter the audit log" },
    field("Actor", el("input", { name: "actor", id: "a-actor", autocomplete: "off" })),
    field("Action", el("input", { name: "action", id: "a-action", placeholder: "e.g. call.ended", autocomplete: "off" })),
    field("Object", el("input", { name: "object", id: "a-object", placeholder: "e.g. user:alice", autocomplete: "off" })),
    field("After entry #", el("input", { name: "after_seq", id: "a-after", type: "number", min: "0" })),
    field("Rows per page", el("input", { name: "limit", id: "a-limit", type: "number", min: "1", max: "1000", value: "100" })),
    el("div", {}, el("button", { class: "btn primary", type: "submit" }, "Filter")),
  );
  async function search() {
    lastQuery = queryOf(form, FILTERS);
    cursor = null;
    await load(false);
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  more.addEventListener("click", () => load(true));

  async function exportLog(format) {
    try {
      const size = await download(`/api/audit/export?format=${format}`, `audit.${format}`);
      status(`Audit export downloaded (${size} bytes).`, "ok");
    } catch (err) {
      status(isMissingRoute(err) ? "Audit export is not available on this server yet (GET /api/audit/export is missing)." : `Export failed: ${err.message}`);
    }
  }

  const verifyButton = el("button", { class: "btn primary", type: "button", id: "verify-now" }, "Verify now");
  verifyButton.addEventListener("click", () => verify(verifyButton));
  const integrity = section(
    "Integrity",
    checkpoints,
    el("div", { class: "toolbar" },
      verifyButton,
      user.role === "admin" ? el("button", { class: "btn", type: "button", onclick: (e) => checkpoint(e.currentTarget) }, "Sign a checkpoint now") : null,
      el("button", { class: "btn small", type: "button", onclick: () => exportLog("csv") }, "Export CSV"),
      el("button", { class: "btn small", type: "button", onclick: () => exportLog("jsonl") }, "Export JSON Lines")),
    verifyResult,
  );
  content.replaceChildren(integrity, section("Entries", form, results, more));
  await Promise.all([loadCheckpoints(), search()]);
});
