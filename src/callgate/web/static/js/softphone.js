// The softphone page: sign in, colleagues with presence, one-click calls, incoming calls,
// the in-call view with quality, and the call history.

import { api, el, formatDuration, formatTime, forget, me, signOut, token, wireSignIn } from "./api.js";
import { Call, isPoor } from "./call.js";
import { dispositionLabel, endingMessage } from "./reasons.js";
import { Ringer, unlockAudio } from "./ring.js";
import { Signaling, SignalingError } from "./signaling.js";

const $ = (id) => document.getElementById(id);
const DIRECTORY_MS = 5000;

const state = {
  user: null,
  signaling: null,
  call: null,
  lastCall: null,
  colleagues: [],
  names: new Map(),
  stream: null,
  timerTick: null,
  directoryTick: null,
};
const ringer = new Ringer();

// ---- small view helpers ----

function show(id, visible) {
  $(id).hidden = !visible;
}

function notice(text, kind = "error") {
  const box = $("notice");
  box.textContent = text || "";
  box.className = `notice ${kind}`;
  box.hidden = !text;
}

function callStatus(text) {
  $("call-status").textContent = text;
}

function nameOf(handle) {
  return state.names.get(handle) || handle;
}

function setConnection(text, kind) {
  const badge = $("conn");
  badge.textContent = text;
  badge.className = `badge ${kind}`;
  badge.hidden = false;
}

// ---- signing in and out ----

async function start(user) {
  state.user = user;
  unlockAudio();
  show("signin", false);
  show("phone", true);
  $("me").textContent = `${user.display_name} (${user.handle})`;
  show("me", true);
  show("signout", true);
  show("console-link", ["admin", "compliance", "security"].includes(user.role));
  // Security officers have one console page: unmanaged calling (the others are for admin/compliance).
  if (user.role === "security") $("console-link").href = "/console/unmanaged";
  connectSignaling();
  await Promise.all([loadDirectory(), loadHistory()]);
  state.directoryTick = setInterval(loadDirectory, DIRECTORY_MS);
  $("search").focus();
}

function showSignIn(message = "") {
  show("phone", false);
  show("signin", true);
  show("me", false);
  show("signout", false);
  show("console-link", false);
  $("conn").hidden = true;
  $("signin-error").textContent = message;
  $("handle").focus();
}

async function stopSession(message) {
  clearInterval(state.directoryTick);
  if (state.call && !state.call.ended) await state.call.hangup();
  if (state.signaling) state.signaling.close();
  state.signaling = null;
  releaseMicrophone();
  showSignIn(message);
}

$("signout").addEventListener("click", async () => {
  await stopSession("");
  await signOut();
});

// ---- signaling ----

function connectSignaling() {
  const signaling = new Signaling(token(), "browser");
  state.signaling = signaling;
  signaling.addEventListener("state", (event) => onSignalingState(event.detail));
  signaling.addEventListener("message", (event) => onServerMessage(event.detail));
  signaling.connect();
}

function onSignalingState({ state: s, retryInMs }) {
  if (s === "online") {
    setConnection("Online", "ok");
    if ($("notice").dataset.kind === "signaling") notice("");
    loadDirectory();
  } else if (s === "connecting") {
    setConnection("Connecting…", "warn");
  } else if (s === "offline") {
    setConnection("Offline", "bad");
    if (state.call && !state.call.ended) state.call.abort("signaling-lost");
    const seconds = Math.max(1, Math.round((retryInMs || 0) / 1000));
    notice(`Connection to the server lost. Reconnecting in ${seconds} s…`);
    $("notice").dataset.kind = "signaling";
  } else if (s === "unauthorized") {
    forget();
    stopSession("Your session has ended. Please sign in again.");
  }
}

async function onServerMessage(message) {
  if (message.type === "call.incoming") {
    await onIncoming(message);
    return;
  }
  if (state.call) await state.call.handle(message);
}

// ---- the microphone ----

async function microphone() {
  if (state.stream && state.stream.getAudioTracks().some((t) => t.readyState === "live")) {
    return state.stream;
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("This browser cannot use a microphone here (a secure https:// page is needed).");
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  } catch (err) {
    if (err.name === "NotAllowedError" || err.name === "SecurityError") {
      throw new Error(
        "Microphone access is blocked. Allow the microphone for this site (the icon in the address bar), then try again.",
      );
    }
    if (err.name === "NotFoundError") throw new Error("No microphone found. Connect one and try again.");
    throw new Error(`The microphone cannot be used: ${err.message}`);
  }
  return state.stream;
}

function releaseMicrophone() {
  if (state.stream) for (const track of state.stream.getTracks()) track.stop();
  state.stream = null;
}

// ---- calls ----

function busy() {
  return state.call !== null && !state.call.ended;
}

function wireCall(call) {
  state.call = call;
  window.callgate.call = call;
  call.addEventListener("state", (e) => renderCall(e.detail.state));
  call.addEventListener("quality", (e) => renderQuality(e.detail));
  call.addEventListener("track", (e) => {
    $("remote-audio").srcObject = e.detail.stream;
  });
  call.addEventListener("media-interrupted", () => callStatus("Connection unstable — trying to recover…"));
  call.addEventListener("recording", () => notice("This call is recorded.", "info"));
  call.addEventListener("ended", (e) => onEnded(call, e.detail));
  renderCollegueButtons();
}

async function placeCall(colleague) {
  notice("");
  if (busy()) return;
  if (!state.signaling || !state.signaling.hello) {
    notice("Not connected to the server yet. Wait a moment and try again.");
    return;
  }
  unlockAudio();
  let stream;
  try {
    stream = await microphone();
  } catch (err) {
    notice(err.message);
    return;
  }
  const call = new Call(state.signaling, state.signaling.hello, {
    role: "caller",
    peer: colleague,
    stream,
  });
  wireCall(call);
  try {
    await call.invite(colleague.handle);
  } catch (err) {
    const text = err instanceof SignalingError ? err.message : String(err.message || err);
    await call.abort("not-placed");
    notice(`The call could not be placed: ${text}`);
  }
}

// A number typed in the dial box: "+…" as written, anything else as a national number ("tel:…");
// the server's dial plan decides where it goes, and whether this user may call it.
const DIALLABLE = /^\+?[0-9][0-9 ()\-.]{0,30}$/;

$("dial-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const written = $("dial-number").value.trim();
  if (!DIALLABLE.test(written)) {
    notice("Type a phone number: digits, optionally starting with +.");
    return;
  }
  const number = written.startsWith("+") ? written : `tel:${written}`;
  placeCall({ handle: number, display_name: written });
});

async function onIncoming(message) {
  const from = message.from || {};
  if (busy()) return; // the server answers "busy" itself; a second ringing call is not shown
  state.names.set(from.handle, from.display_name || from.handle);
  // A call a policy rule makes relay-only says so (docs/signaling.md): gather relay candidates only.
  const hello =
    message.ice_transport_policy === "relay"
      ? { ...state.signaling.hello, ice_transport_policy: "relay" }
      : state.signaling.hello;
  const call = new Call(state.signaling, hello, {
    role: "callee",
    peer: { handle: from.handle, display_name: from.display_name || from.handle },
    stream: null,
  });
  wireCall(call);
  call.setIncoming(message);
  $("incoming-name").textContent = call.peer.display_name;
  $("incoming-handle").textContent = call.peer.handle;
  ringer.start("ring");
  $("accept").focus();
}

$("accept").addEventListener("click", async () => {
  const call = state.call;
  if (!call || call.state !== "incoming") return;
  ringer.stop();
  unlockAudio();
  try {
    call.stream = await microphone();
  } catch (err) {
    call.microphoneProblem = err.message;
    notice(err.message);
    await call.decline("microphone unavailable");
    return;
  }
  try {
    await call.accept();
  } catch (err) {
    notice(`The call could not be answered: ${err.message}`);
    await call.abort("not-answered");
  }
});

$("decline").addEventListener("click", async () => {
  const call = state.call;
  if (!call || call.state !== "incoming") return;
  ringer.stop();
  await call.decline("declined");
});

$("hangup").addEventListener("click", async () => {
  if (state.call && !state.call.ended) await state.call.hangup();
});

$("mute").addEventListener("click", () => {
  const button = $("mute");
  const muted = button.getAttribute("aria-pressed") !== "true";
  button.setAttribute("aria-pressed", String(muted));
  button.textContent = muted ? "Unmute" : "Mute";
  if (state.call) state.call.setMuted(muted);
  callStatus(muted ? "Microphone muted." : "Microphone on.");
});

const STATE_TEXT = {
  calling: "Calling…",
  ringing: "Ringing…",
  connecting: "Connecting…",
  connected: "In call",
};

function renderCall(s) {
  const call = state.call;
  if (!call) return;
  if (s === "incoming") {
    show("idle-view", false);
    show("active-view", false);
    show("incoming-view", true);
    callStatus(`Incoming call from ${call.peer.display_name}`);
    return;
  }
  if (s === "ended") return;
  ringer.stop();
  if (s === "ringing" && call.role === "caller") ringer.start("ringback");
  show("idle-view", false);
  show("incoming-view", false);
  show("active-view", true);
  $("active-name").textContent = call.peer.display_name;
  $("active-state").textContent = STATE_TEXT[s] || s;
  document.body.dataset.call = s;
  callStatus(s === "connected" ? `Connected with ${call.peer.display_name}` : STATE_TEXT[s] || s);
  if (s === "calling") {
    resetQuality();
    $("hangup").focus();
  }
  if (s === "connecting" && document.activeElement === $("accept")) $("hangup").focus();
  if (s === "connected") {
    const path = call.quality && pathLabel(call.quality);
    $("q-path").textContent = path || "—";
    clearInterval(state.timerTick);
    state.timerTick = setInterval(() => {
      $("timer").textContent = formatDuration((Date.now() - call.connectedAt) / 1000);
    }, 500);
  }
}

function pathLabel(q) {
  if (!q.localType) return null;
  return q.localType === "relay" || q.remoteType === "relay" ? "Relay (callgate TURN)" : "Direct";
}

function resetQuality() {
  $("timer").textContent = "0:00";
  for (const id of ["q-grade", "q-loss", "q-jitter", "q-rtt", "q-path"]) $(id).textContent = "—";
  $("q-grade").className = "";
  const mute = $("mute");
  mute.setAttribute("aria-pressed", "false");
  mute.textContent = "Mute";
}

function renderQuality(q) {
  $("q-loss").textContent = q.loss === null ? "—" : `${(q.loss * 100).toFixed(1)} %`;
  $("q-jitter").textContent = q.jitterMs === null ? "—" : `${q.jitterMs.toFixed(0)} ms`;
  $("q-rtt").textContent = q.rttMs === null ? "—" : `${q.rttMs.toFixed(0)} ms`;
  const path = pathLabel(q);
  if (path) $("q-path").textContent = path;
  const poor = isPoor(q);
  const grade = $("q-grade");
  grade.textContent = poor.length ? `Poor (${poor.join(", ")})` : "Good";
  grade.className = poor.length ? "bad" : "ok";
}

async function onEnded(call, detail) {
  ringer.stop();
  clearInterval(state.timerTick);
  state.lastCall = call;
  const message = endingMessage(detail, call.role, call.peer.display_name);
  if (state.call === call) state.call = null;
  delete document.body.dataset.call;
  document.body.dataset.lastReason = detail.reason || "";
  show("incoming-view", false);
  show("active-view", false);
  show("idle-view", true);
  if (call.microphoneProblem) {
    callStatus("Call declined: the microphone could not be used.");
    notice(call.microphoneProblem);
    $("remote-audio").srcObject = null;
    renderCollegueButtons();
    await Promise.all([loadHistory(), loadDirectory()]);
    return;
  }
  callStatus(message);
  const quiet = ["hangup", "not-placed", "not-answered"].includes(detail.reason);
  if (!quiet && detail.reason !== "signaling-lost") notice(message, "info");
  $("remote-audio").srcObject = null;
  releaseMicrophone();
  renderCollegueButtons();
  await Promise.all([loadHistory(), loadDirectory()]);
}

// ---- colleagues ----

const PRESENCE_TEXT = { online: "Online", "in-call": "In a call", offline: "Offline" };

async function loadDirectory() {
  if (!token()) return;
  try {
    const body = await api("/api/directory");
    state.colleagues = body.users;
    for (const c of body.users) state.names.set(c.handle, c.display_name);
    renderColleagues();
  } catch (err) {
    if (err.status === 401) onSignalingState({ state: "unauthorized" });
  }
}

function renderColleagues() {
  const query = $("search").value.trim().toLowerCase();
  const list = $("colleagues");
  const matches = state.colleagues.filter(
    (c) => !query || c.handle.includes(query) || c.display_name.toLowerCase().includes(query),
  );
  const order = { online: 0, "in-call": 1, offline: 2 };
  matches.sort((a, b) => order[a.presence] - order[b.presence] || a.display_name.localeCompare(b.display_name));
  list.replaceChildren(
    ...matches.map((c) =>
      el(
        "li",
        { class: "colleague", dataset: { handle: c.handle, presence: c.presence } },
        el("span", { class: `dot ${c.presence}`, "aria-hidden": "true" }),
        el("span", { class: "who" }, el("span", { class: "name" }, c.display_name), el("span", { class: "muted" }, ` ${c.handle} · ${PRESENCE_TEXT[c.presence]}`)),
        el(
          "button",
          {
            class: "btn call",
            type: "button",
            "aria-label": `Call ${c.display_name} (${PRESENCE_TEXT[c.presence]})`,
            disabled: busy() || c.presence === "offline",
            onclick: () => placeCall(c),
          },
          "Call",
        ),
      ),
    ),
  );
  show("colleagues-empty", matches.length === 0);
}

function renderCollegueButtons() {
  renderColleagues();
}

$("search").addEventListener("input", renderColleagues);

// ---- history ----

async function loadHistory() {
  if (!token()) return;
  let body;
  try {
    body = await api("/api/calls?limit=20");
  } catch {
    return;
  }
  const rows = body.calls.map((c) => {
    const outgoing = c.caller_user === state.user.handle;
    const other = outgoing ? c.callee_user : c.caller_user;
    const who = `${outgoing ? "To" : "From"} ${nameOf(other)}`;
    return el(
      "tr",
      { dataset: { callId: c.call_id } },
      el("td", {}, formatTime(c.invite_at)),
      el("td", {}, who),
      el("td", {}, dispositionLabel(c.disposition)),
      el("td", {}, c.disposition === "answered" ? formatDuration(c.duration_s) : "—"),
    );
  });
  $("history-rows").replaceChildren(...rows);
  show("history-empty", rows.length === 0);
}

// ---- start ----

window.callgate = {
  call: null,
  // Diagnostics (and browser tests): the current or last call's quality figures.
  async quality() {
    const call = state.call || state.lastCall;
    if (!call) return null;
    if (call.ended) return call.quality;
    return call.sample();
  },
  remoteStream() {
    return $("remote-audio").srcObject;
  },
  get signaling() {
    return state.signaling;
  },
};

wireSignIn($("signin-form"), $("signin-error"), start);

(async () => {
  if (!token()) {
    showSignIn();
    return;
  }
  try {
    await start(await me());
  } catch (err) {
    forget();
    showSignIn(err.status === 401 ? "Your session has ended. Please sign in again." : "");
  }
})();
