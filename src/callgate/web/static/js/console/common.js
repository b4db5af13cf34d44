// Console plumbing: sign-in, role checks, "not available" handling, downloads.

import { ApiError, api, el, forget, me, signOut, token, wireSignIn } from "../api.js";

export const $ = (id) => document.getElementById(id);
export const CONSOLE_ROLES = ["admin", "compliance", "security"];

export function status(text, kind = "error") {
  const box = $("page-status");
  box.textContent = text || "";
  box.className = `notice ${kind}`;
  box.hidden = !text;
}

// A route the server does not have (yet) answers 404 "Not Found" or 405.
export function isMissingRoute(err) {
  return err instanceof ApiError && ((err.status === 404 && err.message === "Not Found") || err.status === 405);
}

export function unavailable(what, endpoint) {
  return el(
    "p",
    { class: "unavailable", role: "note", dataset: { unavailable: endpoint } },
    `${what} is not available on this server yet (${endpoint} is missing).`,
  );
}

// Render `err` into `container` the way a person can act on it.
export function showError(container, err, what, endpoint) {
  if (isMissingRoute(err)) container.replaceChildren(unavailable(what, endpoint));
  else if (err instanceof ApiError && err.status === 403) {
    container.replaceChildren(el("p", { class: "unavailable" }, `${what} is not shown to your role (${err.message}).`));
  } else container.replaceChildren(el("p", { class: "error", role: "alert" }, `${what} could not be loaded: ${err.message}`));
}

function refuse(user, roles) {
  const words = { admin: "administrators", compliance: "compliance officers", security: "security officers" };
  const need = roles.map((r) => words[r] || r).join(" and ");
  const content = $("content");
  content.replaceChildren(
    el(
      "section",
      { class: "card refusal", role: "alert", "aria-labelledby": "refusal-title" },
      el("h2", { id: "refusal-title" }, "Access denied"),
      el("p", {}, `You are signed in as ${user.display_name} (${user.handle}, role “${user.role}”). This page is for ${need}.`),
      el("p", {}, el("a", { href: "/" }, "Back to the phone")),
    ),
  );
  content.hidden = false;
  document.body.dataset.refused = "true";
}

// Start a console page: sign in if needed, check the role, then `render(user, content)`.
export function boot(roles, render) {
  const signin = $("signin");
  const start = async (user) => {
    signin.hidden = true;
    $("me").textContent = `${user.display_name} · ${user.role}`;
    $("me").hidden = false;
    $("signout").hidden = false;
    if (!roles.includes(user.role)) {
      refuse(user, roles);
      return;
    }
    const content = $("content");
    content.hidden = false;
    document.body.dataset.role = user.role;
    await render(user, content);
  };
  $("signout").addEventListener("click", async () => {
    await signOut();
    location.reload();
  });
  wireSignIn($("signin-form"), $("signin-error"), async () => start(await me()));
  (async () => {
    if (!token()) {
      signin.hidden = false;
      $("handle").focus();
      return;
    }
    try {
      await start(await me());
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        forget();
        signin.hidden = false;
        $("signin-error").textContent = "Your session has ended. Please sign in again.";
      } else status(`The console could not start: ${err.message}`);
    }
  })();
}

// Fetch with the bearer token and save the body as a file (export buttons).
export async function download(path, fallbackName) {
  const response = await api(path, { raw: true });
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: match ? match[1] : fallbackName, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return blob.size;
}

// Form fields → query string, skipping empty values; datetime-local values become ISO UTC.
export function queryOf(form, names) {
  const params = new URLSearchParams();
  for (const name of names) {
    const field = form.elements[name];
    if (!field) continue;
    let value = field.type === "checkbox" ? (field.checked ? "true" : "") : field.value.trim();
    if (value && field.type === "datetime-local") value = new Date(value).toISOString();
    if (value) params.set(name, value);
  }
  return params;
}

// An <audio> element that streams and seeks: the server hands out a short-lived URL opened for
// this officer and this recording only (POST /api/recordings/{id}/playback, audited), which the
// browser fetches with Range requests — no bearer token in any URL.
export async function recordingPlayer(recordingId, label) {
  const grant = await api(`/api/recordings/${encodeURIComponent(recordingId)}/playback`, { method: "POST" });
  return el("audio", { controls: "", preload: "metadata", src: grant.url, "aria-label": label, dataset: { expiresAt: grant.expires_at } });
}

export function field(label, input) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 8)}`;
  input.id = id;
  return el("div", { class: "field" }, el("label", { for: id }, label), input);
}

export function section(title, ...children) {
  const id = `h-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return el("section", { class: "card", "aria-labelledby": id }, el("h2", { id }, title), ...children);
}

export function table(headers, rows, caption) {
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      {},
      caption ? el("caption", { class: "visually-hidden" }, caption) : null,
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows),
    ),
  );
}

// Quality as a pill: the poor-call rule's verdict and its figures, whatever shape the API gives.
export function qualityPill(q) {
  if (!q) return el("span", { class: "muted" }, "—");
  if (typeof q === "string") {
    const poor = q.toLowerCase().startsWith("poor");
    return el("span", { class: `pill ${poor ? "poor" : "good"}` }, q.charAt(0).toUpperCase() + q.slice(1));
  }
  const poor = q.poor === true || q.classification === "poor" || q.quality === "poor";
  const parts = [];
  const loss = q.loss_rate ?? q.loss;
  if (typeof loss === "number") parts.push(`loss ${(loss * 100).toFixed(1)} %`);
  if (typeof q.jitter_ms === "number") parts.push(`jitter ${q.jitter_ms.toFixed(0)} ms`);
  if (typeof q.rtt_ms === "number") parts.push(`RTT ${q.rtt_ms.toFixed(0)} ms`);
  if (typeof q.mos === "number") parts.push(`MOS ${q.mos.toFixed(1)}`);
  const reason = q.reason || (Array.isArray(q.poor_reasons) ? q.poor_reasons.join(", ") : q.poor_reason);
  const label = poor ? `Poor${reason ? ` (${reason})` : ""}` : "Good";
  return el("span", { class: `pill ${poor ? "poor" : "good"}`, title: parts.join(", ") }, label, parts.length ? ` · ${parts.join(", ")}` : "");
}

export { api, el };
