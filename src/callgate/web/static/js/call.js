// One call's WebRTC side, mirroring the Python client (src/callgate/client/call.py):
// ICE configuration only from `hello`, trickled candidates, `call.media` when media is up or
// fails, `call.stats` every STATS_MS while connected and a final report at the end.

import { SignalingError } from "./signaling.js";

const STATS_MS = 2000;
// The enterprise poor-call rule (records/quality.py, docs/design.md "Records").
export const POOR = { loss: 0.1, jitterMs: 30, rttMs: 500, concealed: 0.07 };

export function rtcConfiguration(hello) {
  return {
    iceServers: (hello.ice_servers || []).map((s) => ({
      urls: s.urls,
      username: s.username ?? undefined,
      credential: s.credential ?? undefined,
    })),
    iceTransportPolicy: hello.ice_transport_policy === "relay" ? "relay" : "all",
  };
}

function round(value, digits = 2) {
  return value === null || value === undefined ? null : Number(value.toFixed(digits));
}

// `call.stats` streams (docs/signaling.md) and the figures the UI shows, from getStats().
export function summarize(report) {
  let inbound = null;
  let outbound = null;
  let remoteIn = null;
  let pair = null;
  let transport = null;
  const byId = new Map();
  report.forEach((s) => {
    byId.set(s.id, s);
    if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
    else if (s.type === "outbound-rtp" && s.kind === "audio") outbound = s;
    else if (s.type === "remote-inbound-rtp" && s.kind === "audio") remoteIn = s;
    else if (s.type === "transport") transport = s;
  });
  if (transport && transport.selectedCandidatePairId) pair = byId.get(transport.selectedCandidatePairId);
  if (!pair) {
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
    });
  }
  const local = pair ? byId.get(pair.localCandidateId) : null;
  const remote = pair ? byId.get(pair.remoteCandidateId) : null;
  let rttMs = null;
  if (remoteIn && remoteIn.roundTripTime !== undefined) rttMs = remoteIn.roundTripTime * 1000;
  else if (pair && pair.currentRoundTripTime !== undefined) rttMs = pair.currentRoundTripTime * 1000;
  rttMs = round(rttMs);
  const streams = [];
  let concealedRatio = null;
  if (inbound) {
    const samples = inbound.totalSamplesReceived || 0;
    concealedRatio = samples > 0 ? Math.min(1, (inbound.concealedSamples || 0) / samples) : null;
    streams.push({
      kind: "audio",
      direction: "inbound",
      packets: inbound.packetsReceived || 0,
      packets_lost: Math.trunc(inbound.packetsLost || 0),
      jitter_ms: inbound.jitter === undefined ? null : round(inbound.jitter * 1000),
      rtt_ms: rttMs,
      concealed_ratio: concealedRatio === null ? null : round(concealedRatio, 4),
    });
  }
  if (outbound) {
    streams.push({
      kind: "audio",
      direction: "outbound",
      packets: outbound.packetsSent || 0,
      packets_lost: Math.max(0, Math.trunc((remoteIn && remoteIn.packetsLost) || 0)),
      jitter_ms: remoteIn && remoteIn.jitter !== undefined ? round(remoteIn.jitter * 1000) : null,
      rtt_ms: rttMs,
    });
  }
  const received = inbound ? inbound.packetsReceived || 0 : 0;
  const lost = inbound ? Math.max(0, inbound.packetsLost || 0) : 0;
  return {
    streams,
    loss: received + lost > 0 ? lost / (received + lost) : null,
    jitterMs: inbound && inbound.jitter !== undefined ? inbound.jitter * 1000 : null,
    rttMs,
    concealedRatio,
    localType: local ? local.candidateType : null,
    remoteType: remote ? remote.candidateType : null,
    samplesReceived: inbound ? inbound.totalSamplesReceived || 0 : 0,
    concealedSamples: inbound ? inbound.concealedSamples || 0 : 0,
    packetsReceived: received,
  };
}

export function isPoor(q) {
  const reasons = [];
  if (q.loss !== null && q.loss > POOR.loss) reasons.push("packet loss");
  if (q.jitterMs !== null && q.jitterMs > POOR.jitterMs) reasons.push("jitter");
  if (q.rttMs !== null && q.rttMs > POOR.rttMs) reasons.push("delay");
  if (q.concealedRatio !== null && q.concealedRatio > POOR.concealed) reasons.push("dropouts");
  return reasons;
}

function codecOf(report) {
  let name = null;
  report.forEach((s) => {
    if (s.type === "codec" && !name && s.mimeType && s.mimeType.startsWith("audio/")) {
      name = s.mimeType.slice(6).toLowerCase();
    }
  });
  return name;
}

export class Call extends EventTarget {
  constructor(signaling, hello, { role, peer, stream }) {
    super();
    this.signaling = signaling;
    this.role = role; // caller | callee
    this.peer = peer; // {handle, display_name}
    this.stream = stream;
    this.callId = null;
    this.state = "new"; // calling ringing incoming connecting connected ended
    this.ended = false;
    this.mediaState = null;
    this.pendingMedia = null;
    this.recorded = false; // the server records this call (call.recording)
    this.answeredAt = null;
    this.connectedAt = null;
    this.quality = null;
    this.finalSent = false;
    this.localQueue = []; // our candidates waiting for a call_id (caller) or the answer (callee)
    this.remoteQueue = []; // theirs, waiting for the remote description
    this.canSendCandidates = false;
    this.pc = new RTCPeerConnection(rtcConfiguration(hello));
    this.pc.addEventListener("icecandidate", (e) => this.onLocalCandidate(e.candidate));
    this.pc.addEventListener("track", (e) => this.emit("track", { stream: e.streams[0] || new MediaStream([e.track]) }));
    this.pc.addEventListener("connectionstatechange", () => this.onConnectionState());
  }

  emit(name, detail = {}) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  setState(state, detail = {}) {
    this.state = state;
    this.emit("state", { state, ...detail });
  }

  // ---- the two ways a call starts ----

  async invite(to) {
    this.setState("calling");
    for (const track of this.stream.getAudioTracks()) this.pc.addTrack(track, this.stream);
    await this.pc.setLocalDescription(await this.pc.createOffer());
    const ack = await this.signaling.request("call.invite", { to, sdp: this.pc.localDescription.sdp });
    this.callId = ack.call_id;
    this.canSendCandidates = true;
    this.flushLocal();
    return this.callId;
  }

  setIncoming(incoming) {
    this.callId = incoming.call_id;
    this.offer = incoming.sdp;
    this.setState("incoming");
  }

  async accept() {
    await this.pc.setRemoteDescription({ type: "offer", sdp: this.offer });
    await this.flushRemote();
    for (const track of this.stream.getAudioTracks()) this.pc.addTrack(track, this.stream);
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    this.setState("connecting");
    await this.signaling.request("call.answer", { call_id: this.callId, sdp: this.pc.localDescription.sdp });
    this.answeredAt = Date.now();
    this.canSendCandidates = true;
    this.flushLocal();
  }

  async decline(reason = "declined") {
    try {
      await this.signaling.request("call.reject", { call_id: this.callId, reason });
    } catch (err) {
      if (!(err instanceof SignalingError)) throw err;
    }
  }

  // ---- server events about this call ----

  async handle(message) {
    if (!this.callId || message.call_id !== this.callId || this.ended) return;
    switch (message.type) {
      case "call.ringing":
        this.setState("ringing", { devices: message.devices });
        break;
      case "call.recording":
        await this.onRecording(message);
        break;
      case "call.answered":
        this.answeredAt = Date.now();
        this.setState("connecting");
        if (!this.recorded) {
          // a recorded call's caller has the anchor's answer already (call.recording)
          await this.pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
          await this.flushRemote();
        }
        if (this.pendingMedia) this.reportMedia(this.pendingMedia);
        break;
      case "call.candidate":
        await this.onRemoteCandidate(message.candidate);
        break;
      case "call.denied":
        this.denial = { reason: message.reason, rule: message.rule };
        break;
      case "call.ended":
        await this.finish(message.reason, message.ended_by);
        break;
      default:
        break;
    }
  }

  // The call is recorded on the server (docs/signaling.md, "Recorded calls"). The caller's copy
  // carries the server anchor's answer: media goes to the anchor before the callee rings.
  async onRecording(message) {
    if (this.recorded) return;
    this.recorded = true;
    this.emit("recording", { recordingId: message.recording_id });
    if (this.role === "caller" && message.sdp) {
      await this.pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
      await this.flushRemote();
    }
  }

  // ---- trickle ICE ----

  onLocalCandidate(candidate) {
    const init = candidate ? candidate.toJSON() : { candidate: "" };
    for (const key of Object.keys(init)) if (init[key] === undefined) delete init[key];
    this.localQueue.push(init);
    if (this.canSendCandidates) this.flushLocal();
  }

  flushLocal() {
    const queued = this.localQueue.splice(0);
    for (const candidate of queued) {
      this.signaling
        .request("call.candidate", { call_id: this.callId, candidate })
        .catch(() => {}); // the call may have ended meanwhile; nothing to do
    }
  }

  async onRemoteCandidate(candidate) {
    if (!candidate || !candidate.candidate) return; // end-of-candidates
    if (!this.pc.remoteDescription) {
      this.remoteQueue.push(candidate);
      return;
    }
    try {
      await this.pc.addIceCandidate(candidate);
    } catch (err) {
      console.warn("ignoring a bad remote candidate", err);
    }
  }

  async flushRemote() {
    for (const candidate of this.remoteQueue.splice(0)) await this.onRemoteCandidate(candidate);
  }

  // ---- media state and quality ----

  onConnectionState() {
    const state = this.pc.connectionState;
    if (this.ended) return;
    if (state === "connected" && this.mediaState === null) this.reportMedia("connected");
    else if (state === "failed" && this.mediaState !== "failed") this.reportMedia("failed");
    else if (state === "disconnected") this.emit("media-interrupted");
  }

  async reportMedia(state) {
    if (state === "connected" && this.answeredAt === null) {
      this.pendingMedia = state; // recorded call: connected to the anchor before the answer
      return;
    }
    this.pendingMedia = null;
    this.mediaState = state;
    const fields = { call_id: this.callId, state };
    if (state === "connected") {
      const report = await this.pc.getStats();
      const q = summarize(report);
      if (q.localType) fields.local_candidate_type = q.localType;
      if (q.remoteType) fields.remote_candidate_type = q.remoteType;
      const codec = codecOf(report);
      if (codec) fields.codec = codec;
      this.connectedAt = Date.now();
      this.quality = q;
      this.setState("connected", { localType: q.localType, remoteType: q.remoteType });
      this.statsTimer = setInterval(() => this.sendStats(false), STATS_MS);
    } else {
      this.emit("media-failed");
    }
    try {
      await this.signaling.request("call.media", fields);
    } catch (err) {
      console.warn("call.media", err);
    }
  }

  async sample() {
    const q = summarize(await this.pc.getStats());
    this.quality = q;
    this.emit("quality", q);
    return q;
  }

  async sendStats(final) {
    if (this.mediaState !== "connected" || !this.callId) return;
    if (final) {
      if (this.finalSent) return;
      this.finalSent = true;
      clearInterval(this.statsTimer);
    }
    try {
      const q = await this.sample();
      await this.signaling.request("call.stats", { call_id: this.callId, final, streams: q.streams }, 3000);
    } catch (err) {
      if (!(err instanceof SignalingError)) console.warn("call.stats", err);
    }
  }

  setMuted(muted) {
    for (const track of this.stream.getAudioTracks()) track.enabled = !muted;
  }

  // ---- ending ----

  async hangup() {
    if (this.ended) return;
    await this.sendStats(true);
    if (this.callId) {
      try {
        await this.signaling.request("call.hangup", { call_id: this.callId });
      } catch (err) {
        if (!(err instanceof SignalingError)) throw err;
      }
    }
    // call.ended normally follows; do not wait for it forever.
    await new Promise((resolve) => {
      if (this.ended) return resolve();
      const timer = setTimeout(resolve, 2000);
      this.addEventListener("ended", () => { clearTimeout(timer); resolve(); }, { once: true });
    });
    if (!this.ended) await this.finish("hangup", this.role);
  }

  // End locally without the server (signaling lost): no messages sent.
  async abort(reason) {
    await this.finish(reason, null, false);
  }

  async finish(reason, endedBy, sendFinal = true) {
    if (this.ended) return;
    if (sendFinal) await this.sendStats(true);
    this.ended = true;
    clearInterval(this.statsTimer);
    this.pc.close();
    this.setState("ended");
    this.emit("ended", { reason, endedBy, denial: this.denial || null });
  }
}
