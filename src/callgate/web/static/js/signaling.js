// Signaling protocol v1 over /ws (docs/signaling.md): requests with ids answered by ack/error,
// server events, and reconnection with exponential backoff when the socket drops.

export class SignalingError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];
const PING_MS = 20000;

export class Signaling extends EventTarget {
  constructor(token, device = "browser") {
    super();
    this.token = token;
    this.device = device;
    this.ws = null;
    this.hello = null;
    this.state = "offline"; // connecting | online | offline | unauthorized
    this.attempt = 0;
    this.nextId = 1;
    this.pending = new Map();
    this.stopped = false;
    this.pingTimer = null;
    this.retryTimer = null;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ token: this.token, device: this.device });
    return `${scheme}//${location.host}/ws?${query}`;
  }

  connect() {
    this.stopped = false;
    this.setState("connecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.addEventListener("message", (event) => this.onMessage(event.data));
    ws.addEventListener("close", (event) => this.onClose(ws, event));
  }

  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    if (this.ws) this.ws.close(1000, "bye");
  }

  setState(state, detail = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...detail } }));
  }

  onMessage(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (message.type === "ack" || message.type === "error") {
      const waiter = message.id === null || message.id === undefined ? null : this.pending.get(message.id);
      if (waiter) {
        this.pending.delete(message.id);
        clearTimeout(waiter.timer);
        if (message.type === "ack") waiter.resolve(message);
        else waiter.reject(new SignalingError(message.code, message.message));
      }
      return;
    }
    if (message.type === "hello") {
      this.hello = message;
      this.attempt = 0;
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.request("ping").catch(() => {}), PING_MS);
      this.setState("online");
    }
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
  }

  onClose(ws, event) {
    if (ws !== this.ws) return;
    clearInterval(this.pingTimer);
    for (const waiter of this.pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(new SignalingError("disconnected", "signaling connection lost"));
    }
    this.pending.clear();
    this.hello = null;
    if (this.stopped) {
      this.setState("offline");
      return;
    }
    if (event.code === 4401) {
      this.setState("unauthorized");
      return;
    }
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    const jittered = delay * (0.8 + Math.random() * 0.4);
    this.setState("offline", { retryInMs: jittered });
    this.retryTimer = setTimeout(() => this.connect(), jittered);
  }

  // Send a client message; resolves with the ack, rejects with SignalingError.
  request(type, fields = {}, timeoutMs = 10000) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !this.hello) {
      return Promise.reject(new SignalingError("disconnected", "not connected to the server"));
    }
    const id = `b${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new SignalingError("timeout", `no answer to ${type}`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ type, id, ...fields }));
    });
  }
}
