// REST helpers: the bearer token lives in sessionStorage (this tab only, gone when it closes).

const TOKEN_KEY = "callgate.token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

// Single sign-on (docs/identity.md): /api/sso/callback sends the browser back here with the token,
// or the reason it failed, in the URL fragment (never sent to any server). Keep the token and
// clear the address bar at once, so it stays out of history and bookmarks.
const ssoResult = new URLSearchParams(location.hash.slice(1));
const ssoError = ssoResult.get("sso_error");
if (ssoResult.has("sso_token")) sessionStorage.setItem(TOKEN_KEY, ssoResult.get("sso_token"));
if (ssoResult.has("sso_token") || ssoError !== null) {
  history.replaceState(null, "", location.pathname + location.search);
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function forget() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function detailOf(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  return `HTTP ${status}`;
}

// JSON request; throws ApiError with the server's `detail`.
export async function api(path, { method = "GET", body, raw = false } = {}) {
  const headers = {};
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, "cannot reach the server");
  }
  if (raw && response.ok) return response;
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, detailOf(data, response.status));
  return data;
}

export async function signIn(handle, password) {
  const body = await api("/api/login", {
    method: "POST",
    body: { handle: handle.trim().toLowerCase(), password, device: "browser" },
  });
  sessionStorage.setItem(TOKEN_KEY, body.token);
  return body.user;
}

export async function signOut() {
  try {
    await api("/api/logout", { method: "POST" });
  } catch {
    // the token may be expired already: forgetting it is what matters
  }
  forget();
}

// The signed-in user, with `role` even before the server reports one.
export async function me() {
  const user = await api("/api/me");
  if (!user.role) user.role = user.is_admin ? "admin" : "user";
  return user;
}

// Shared sign-in form wiring (softphone and console).
// "Sign in with <company>" under the form when the server has single sign-on on.
async function offerSso(errorEl) {
  const holder = document.getElementById("sso");
  const link = document.getElementById("sso-link");
  if (ssoError !== null) errorEl.textContent = `Single sign-on failed: ${ssoError}`;
  if (!holder || !link) return;
  try {
    const info = await api("/api/sso");
    if (!info.enabled) return;
    link.textContent = `Sign in with ${info.label}`;
    const login = info.login || "/api/sso/login"; // OIDC's, or SAML's /api/saml/login
    link.href = `${login}?${new URLSearchParams({ next: location.pathname })}`;
    holder.hidden = false;
  } catch {
    // no single sign-on offered: the password form is enough
  }
}

export function wireSignIn(form, errorEl, onSignedIn) {
  offerSso(errorEl);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorEl.textContent = "";
    const handle = form.elements.handle.value;
    const password = form.elements.password.value;
    if (!handle.trim() || !password) {
      errorEl.textContent = "Enter your user name and password.";
      (handle.trim() ? form.elements.password : form.elements.handle).focus();
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const user = await signIn(handle, password);
      form.elements.password.value = "";
      await onSignedIn(user);
    } catch (err) {
      errorEl.textContent =
        err.status === 401 ? "Wrong user name or password." : `Sign-in failed: ${err.message}`;
      form.elements.password.focus();
    } finally {
      button.disabled = false;
    }
  });
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
}

export function formatTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

// Build an element: el("td", {class: "x"}, "text", child).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
