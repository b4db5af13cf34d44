// Compliance recordings (docs/recording.md): searched by party, dates, call, hold and archive
// state, paged by the server; each with its retention date, what holds it, its WORM archive copy;
// playback that streams and seeks, the export bundle, and — for compliance officers — putting or
// lifting a legal hold with a reason. Every playback, export and hold change is audited.

import { formatTime } from "../api.js";
import { api, boot, download, el, field, queryOf, recordingPlayer, section, showError, status, table } from "./common.js";

const FILTERS = ["party", "since", "until", "call_id", "held", "archive", "state", "limit"];

function options(name, label, choices) {
  return el("select", { name, id: `f-${name}` }, el("option", { value: "" }, label),
    ...choices.map(([value, text]) => el("option", { value }, text)));
}

function filterForm(onSearch) {
  const form = el(
    "form",
    { class: "filters", role: "search", "aria-label": "Search recordings" },
    field("Party (user or number)", el("input", { name: "party", id: "f-party", autocomplete: "off", spellcheck: "false", maxlength: "255" })),
    field("From", el("input", { name: "since", id: "f-since", type: "datetime-local" })),
    field("Until", el("input", { name: "until", id: "f-until", type: "datetime-local" })),
    field("Call id", el("input", { name: "call_id", id: "f-call-id", autocomplete: "off", spellcheck: "false", pattern: "[0-9a-f]{32}", maxlength: "32" })),
    field("Legal hold", options("held", "Held or not", [["true", "Held"], ["false", "Not held"]])),
    field("WORM archive", options("archive", "Any archive state", [["archived", "Archived"], ["pending", "Not yet archived"], ["hold-pending", "S3 legal hold pending"]])),
    field("State", options("state", "Any state", [["closed", "Closed"], ["failed", "Failed"], ["interrupted", "Interrupted"], ["open", "Recording now"]])),
    field("Rows per page", el("input", { name: "limit", id: "f-limit", type: "number", min: "1", max: "1000", value: "50" })),
    el("div", {}, el("button", { class: "btn primary", type: "submit" }, "Search")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onSearch(form);
  });
  return form;
}

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
  // the S3 legal hold follows a hold within seconds while serve runs (docs/recording.md)
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
      holder.replaceChildren(await recordingPlayer(r.recording_id, `Recording ${r.recording_id}`));
    } catch (err) {
      showError(holder, err, "The recording", "POST /api/recordings/{id}/playback");
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

function recordingRow(r, officer, reload) {
  return el("tr", { dataset: { recordingId: r.recording_id } },
    el("td", {}, el("code", {}, r.recording_id.slice(0, 8))),
    el("td", {}, el("a", { href: `/console/records/${r.call_id}` }, "Call record")),
    el("td", { class: "parties" }, parties(r)),
    el("td", {}, formatTime(r.started_at)),
    el("td", {}, r.state + (r.failure ? ` (${r.failure})` : "")),
    el("td", { class: "retain" }, r.retain_until ? el("time", { datetime: r.retain_until }, formatDate(r.retain_until)) : "—"),
    el("td", { class: "hold" }, holdText(r)),
    el("td", { class: "archive" }, archiveText(r)),
    el("td", {}, player(r)),
    officer ? el("td", {}, holdForm(r, reload)) : null);
}

// Who was on the call, from the recording's metadata (RFC 7865 participants).
function parties(r) {
  const people = (r.metadata?.participants || []).map((p) => p.handle || p.number || p.id);
  return people.length ? people.join(" → ") : "—";
}

boot(["admin", "compliance"], async (user, content) => {
  const officer = user.role === "compliance";
  const listing = el("div", { id: "recordings-list" }, "Loading…");
  const summary = el("p", { id: "recordings-summary", role: "status", "aria-live": "polite" });
  const more = el("button", { class: "btn", type: "button", hidden: true, id: "recordings-more" }, "Load more");
  const health = el("div");
  let cursor = null;
  let lastQuery = new URLSearchParams({ limit: "50" });
  let rows = [];

  async function load(append) {
    const query = new URLSearchParams(lastQuery);
    if (append && cursor) query.set("cursor", cursor);
    let body;
    try {
      body = await api(`/api/recordings?${query}`);
    } catch (err) {
      showError(listing, err, "Searching the recordings", "GET /api/recordings");
      summary.textContent = "";
      more.hidden = true;
      return;
    }
    rows = append ? rows.concat(body.items) : body.items;
    cursor = body.next_cursor;
    more.hidden = !cursor;
    summary.textContent = rows.length === 1 ? "1 recording found" : `${rows.length} recordings found${cursor ? " (more available)" : ""}`;
    const headers = ["Recording", "Call", "Parties", "Started", "State", "Retained until", "Legal hold", "WORM archive", "Listen", ...(officer ? ["Hold"] : [])];
    listing.replaceChildren(
      rows.length
        ? table(headers, rows.map((r) => recordingRow(r, officer, reload)), "Recordings")
        : el("p", { class: "muted" }, "No recordings match these filters."),
    );
  }

  async function reload() {
    cursor = null;
    await load(false);
    health.replaceChildren(...(await recordingHealth()));
  }

  async function search(form) {
    lastQuery = queryOf(form, FILTERS);
    await reload();
  }

  more.addEventListener("click", () => load(true));
  const form = filterForm(search);
  content.replaceChildren(
    health,
    section("Search", form),
    section("Recordings", el("p", { class: "muted" },
      "Newest first. A recording is kept until its date, and past it while any legal hold (on it, its call or a party) lasts. ",
      officer ? "Put a hold on a recording with the matter or case it is for; every change is audited." : "Only compliance officers can put or lift a legal hold."),
      summary, listing, more),
  );
  await search(form);
});
