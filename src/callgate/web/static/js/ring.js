// Ring and ringback tones made with Web Audio: no sound files to ship.

let context = null;

// Call from a user gesture (sign-in, a click) so the browser lets the page play sound later.
export function unlockAudio() {
  try {
    context = context || new AudioContext();
    if (context.state === "suspended") context.resume().catch(() => {});
  } catch {
    context = null;
  }
}

export class Ringer {
  constructor() {
    this.timer = null;
    this.nodes = [];
  }

  // pattern: "ring" (incoming: two tones, 2 s on / 4 s off) or "ringback" (outgoing, softer).
  start(pattern = "ring") {
    this.stop();
    document.body.dataset.ringing = pattern;
    if (!context) unlockAudio();
    if (!context) return;
    const [freqs, on, period, volume] =
      pattern === "ring" ? [[440, 480], 2.0, 6000, 0.12] : [[440, 480], 1.0, 4000, 0.04];
    const burst = () => {
      const gain = context.createGain();
      gain.gain.value = 0;
      gain.connect(context.destination);
      const t = context.currentTime;
      gain.gain.setTargetAtTime(volume, t, 0.01);
      gain.gain.setTargetAtTime(0, t + on, 0.02);
      for (const f of freqs) {
        const osc = context.createOscillator();
        osc.frequency.value = f;
        osc.connect(gain);
        osc.start(t);
        osc.stop(t + on + 0.2);
        this.nodes.push(osc);
      }
    };
    burst();
    this.timer = setInterval(burst, period);
  }

  stop() {
    delete document.body.dataset.ringing;
    clearInterval(this.timer);
    this.timer = null;
    for (const osc of this.nodes.splice(0)) {
      try {
        osc.stop();
      } catch {
        // already stopped
      }
    }
  }
}
