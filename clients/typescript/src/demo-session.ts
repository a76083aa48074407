// The scripted session of the Rust `aura` example (examples/aura/demo.rs): set-up, play, a
// 220 → 880 Hz sweep, gain ramps, a seek, stop. Shared by `npm run demo` (src/demo.ts) and the
// end-to-end tests against the Rust and the C++ engines (test/cpp-engine.test.ts), so the test
// judges exactly the session the demo runs. `demoProblems` is the judgement (the same criteria
// as `demo_problems` in tests/e2e_support/mod.rs).
//
// Main-thread only (Node's event loop); allocates freely (not a real-time path).
import type { EngineClient } from "./client";
import type { EngineError } from "./errors";
import type { CommandBodies, CommandName, TelemetryBodies } from "./generated";
import { percentiles } from "./engine-path";

type Step = { at: number; label: string; run: () => Promise<unknown> | void };

/** Meter frames are judged only from this long after the transport change was acknowledged
 *  (frames already in flight at the ack still show the old state), as the Rust demo's SETTLE. */
export const SETTLE_MS = 120;
/** The seek of the script goes to this many seconds into the song. */
export const SEEK_SECONDS = 10;

export interface DemoSummary {
  elapsedS: number;
  sampleRate: number;
  instances: number;
  restarts: number;
  commands: { sent: number; acks: number; errors: number; lost: number; unanswered: number };
  latencyUs: ReturnType<typeof percentiles>;
  telemetry: { meters: number; transport: number; health: number; dropped: number; shed: number };
  meters: {
    playFrames: number;
    playSilent: number;
    playPeakMin: number;
    playPeakMax: number;
    stopFrames: number;
    stopNonzero: number;
    stopPeakMax: number;
    transitional: number;
  };
  /** Position advance per wall second while playing, over whole segments. */
  transport: { rate: number; ratio: number; wallS: number; seekTarget: number; positionAfterSeek: number | null };
  engine: { xruns: number | null; dspMax: number };
}

export interface DemoOptions {
  /** Length of the script in seconds (default 6). */
  durationS?: number;
  /** Progress lines every 500 ms (the demo prints them; the tests do not). */
  progress?: (line: string) => void;
}

/** Runs the script on a ready client and returns what it observed. Never rejects for an engine
 *  error or a lost command (those are counted); removes its listeners when done. */
export async function runDemoSession(client: EngineClient, options: DemoOptions = {}): Promise<DemoSummary> {
  const durationS = options.durationS ?? 6;
  const sampleRate = client.welcome!.sample_rate;
  const instances = new Set([client.welcome!.instance]);
  let restarts = 0;
  let phase: "setup" | "playing" | "stopped" | "changing" = "setup";
  let settledAt = Infinity;
  const onRestart = (i: string) => {
    restarts++;
    instances.add(i);
    // A new engine starts stopped: judge nothing until the script's next transport change.
    phase = "changing";
  };
  client.on("engineRestarted", onRestart);
  const st = { sent: 0, acks: 0, errors: 0, lost: 0, lat: [] as number[], meters: 0, transport: 0, health: 0 };
  const send = <N extends CommandName>(name: N, body: CommandBodies[N]) => {
    st.sent++;
    const t0 = performance.now();
    return client.request(name, body).then(
      () => {
        st.acks++;
        st.lat.push((performance.now() - t0) * 1000);
        return true;
      },
      (e: EngineError) => {
        if (e.fromEngine) st.errors++;
        else st.lost++;
        return false;
      },
    );
  };
  const enter = (p: "playing" | "stopped") => {
    phase = p;
    settledAt = performance.now() + SETTLE_MS;
  };
  const m = { playFrames: 0, playSilent: 0, playPeakMin: Infinity, playPeakMax: 0, stopFrames: 0, stopNonzero: 0, stopPeakMax: 0, transitional: 0 };
  const offMeters = client.onTelemetry("meters", (b) => {
    st.meters++;
    const lo = b.peak.length ? Math.min(...b.peak) : 0;
    const hi = Math.max(0, ...b.peak);
    const settled = performance.now() >= settledAt;
    if (phase === "playing" && settled) {
      m.playFrames++;
      if (lo <= 0) m.playSilent++;
      m.playPeakMin = Math.min(m.playPeakMin, lo);
      m.playPeakMax = Math.max(m.playPeakMax, hi);
    } else if (phase === "stopped" && settled) {
      m.stopFrames++;
      if (hi > 0) m.stopNonzero++;
      m.stopPeakMax = Math.max(m.stopPeakMax, hi);
    } else m.transitional++;
  });
  let health: TelemetryBodies["engine.health"] | null = null;
  let dspMax = 0;
  const offHealth = client.onTelemetry("engine.health", (h) => {
    st.health++;
    health = h;
    dspMax = Math.max(dspMax, h.dsp_load);
  });
  // Transport rate: position advance per wall second while playing, over whole segments (from
  // the first frame after play/seek to the last one before seek/stop), so frames that arrive
  // together in one TCP read do not distort it.
  let seg: { pos0: number; t0: number; pos: number; t: number } | null = null;
  let posDelta = 0;
  let wall = 0;
  let seeking = false;
  let seekAcked = false;
  let positionAfterSeek: number | null = null;
  const seekTarget = sampleRate * SEEK_SECONDS;
  const closeSegment = () => {
    if (seg) {
      posDelta += seg.pos - seg.pos0;
      wall += (seg.t - seg.t0) / 1000;
    }
    seg = null;
  };
  const offTransport = client.onTelemetry("transport.state", (t) => {
    st.transport++;
    const now = performance.now();
    // The first position at or past the target once the seek is acknowledged (an engine that
    // ignored the seek never gets there within the script).
    if (seekAcked && positionAfterSeek === null && t.position >= seekTarget) positionAfterSeek = t.position;
    if (phase !== "playing" || !t.playing || seeking) return closeSegment();
    if (!seg || t.position < seg.pos) {
      closeSegment();
      seg = { pos0: t.position, t0: now, pos: t.position, t: now };
    } else seg = { ...seg, pos: t.position, t: now };
  });
  const d = durationS * 1000;
  const steps: Step[] = [
    { at: 0, label: "setting up: subscribe, add a node, set parameters", run: async () => {
      await Promise.all([client.subscribe("meters", 30), client.subscribe("transport.state", 30), client.subscribe("engine.health", 4)]);
      await send("graph.add_node", { node: 10, kind: "gain" });
      await send("param.set", { node: 1, param: 0, value: 220 });
      await send("param.set", { node: 2, param: 0, value: 0.5 });
      await send("transport.stop", {});
      enter("stopped");
    } },
    { at: 0.12, label: "transport.play", run: async () => { phase = "changing"; if (await send("transport.play", {})) enter("playing"); } },
    { at: 0.4, label: "gain ramp down to 0.25 over 200 ms", run: () => send("param.set", { node: 2, param: 0, value: 0.25, ramp_ms: 200 }) },
    { at: 0.5, label: "gain ramp up to 0.5 over 200 ms", run: () => send("param.set", { node: 2, param: 0, value: 0.5, ramp_ms: 200 }) },
    { at: 0.6, label: `transport.seek to 0:${SEEK_SECONDS}`, run: async () => { seeking = true; closeSegment(); seekAcked = await send("transport.seek", { sample: seekTarget }); seeking = false; } },
    { at: 0.65, label: "osc back to 440 Hz", run: () => send("param.set", { node: 1, param: 0, value: 440, ramp_ms: 200 }) },
    { at: 0.8, label: "transport.stop", run: async () => { closeSegment(); phase = "changing"; if (await send("transport.stop", {})) enter("stopped"); } },
  ];
  const sweepSteps = Math.max(1, Math.floor(((0.55 - 0.18) * durationS) / 0.1));
  for (let i = 0; i <= sweepSteps; i++) {
    const x = i / sweepSteps;
    steps.push({ at: 0.18 + x * 0.37, label: "sweeping osc 220 → 880 Hz", run: () => send("param.set", { node: 1, param: 0, value: 220 * 4 ** x, ramp_ms: 100 }) });
  }
  steps.sort((a, b) => a.at - b.at);
  const t0 = performance.now();
  let label = "";
  const progress = options.progress;
  const view = progress
    ? setInterval(() => {
        const h = health as TelemetryBodies["engine.health"] | null;
        progress(`${((performance.now() - t0) / 1000).toFixed(1)} s  ${client.state}  meters ${st.meters}  acks ${st.acks}  xruns ${h?.xruns ?? "?"}  │ ${label}`);
      }, 500)
    : null;
  const done: Promise<unknown>[] = [];
  try {
    for (const s of steps) {
      const wait = s.at * d - (performance.now() - t0);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      label = s.label;
      done.push(Promise.resolve(s.run()));
    }
    await new Promise((r) => setTimeout(r, Math.max(0, d - (performance.now() - t0))));
    await Promise.all(done);
  } finally {
    if (view) clearInterval(view);
    offMeters();
    offHealth();
    offTransport();
    client.off("engineRestarted", onRestart);
  }
  const rate = wall > 0 ? posDelta / wall : 0;
  const h = health as TelemetryBodies["engine.health"] | null;
  return {
    elapsedS: (performance.now() - t0) / 1000,
    sampleRate,
    instances: instances.size,
    restarts,
    // The demo's own commands still owed an answer (client.inFlight also counts the client's
    // heartbeat pings, one of which may be on its way at any moment under load).
    commands: { sent: st.sent, acks: st.acks, errors: st.errors, lost: st.lost, unanswered: st.sent - st.acks - st.errors - st.lost },
    latencyUs: percentiles(st.lat),
    telemetry: { meters: st.meters, transport: st.transport, health: st.health, dropped: h?.telemetry_dropped ?? 0, shed: h?.telemetry_shed ?? 0 },
    meters: { ...m, playPeakMin: m.playFrames ? m.playPeakMin : NaN },
    transport: { rate, ratio: rate / sampleRate, wallS: wall, seekTarget, positionAfterSeek },
    engine: { xruns: h?.xruns ?? null, dspMax },
  };
}

/** What is wrong with a demo run: empty when every command was acknowledged (none lost, none
 *  an engine error), meters were non-zero (peak > 0.1) while playing and zero while stopped,
 *  the transport advanced at the sample rate within ±`rateTolerance` over ≥ 1 s of play, and
 *  the seek was seen. The criteria of `demo_problems` in tests/e2e_support/mod.rs. */
export function demoProblems(s: DemoSummary, rateTolerance = 0.2): string[] {
  const p: string[] = [];
  const c = s.commands;
  if (c.sent < 20 || c.sent >= 10_000) p.push(`commands sent ${c.sent}`);
  if (c.acks !== c.sent || c.errors !== 0 || c.lost !== 0 || c.unanswered !== 0) {
    p.push(`not every command acknowledged: sent ${c.sent}, acks ${c.acks}, errors ${c.errors}, lost ${c.lost}, unanswered ${c.unanswered}`);
  }
  const m = s.meters;
  if (m.playFrames < 10 || m.playSilent !== 0 || !(m.playPeakMin > 0.1)) p.push(`meters while playing: ${JSON.stringify(m)}`);
  if (m.stopFrames < 5 || m.stopNonzero !== 0 || m.stopPeakMax !== 0) p.push(`meters while stopped: ${JSON.stringify(m)}`);
  const t = s.transport;
  if (!(t.ratio >= 1 - rateTolerance && t.ratio <= 1 + rateTolerance) || t.wallS < 1) {
    p.push(`transport rate vs the sample rate: ${t.ratio.toFixed(3)} × over ${t.wallS.toFixed(2)} s (tolerance ±${rateTolerance * 100} %)`);
  }
  if (t.positionAfterSeek === null || t.positionAfterSeek > t.seekTarget + s.sampleRate) p.push(`seek not seen: ${JSON.stringify(t)}`);
  return p;
}

/** The demo's printed summary. */
export function formatSummary(s: DemoSummary): string {
  const us = (x: number) => (Number.isFinite(x) ? `${x.toFixed(0)} µs` : "-");
  const l = s.latencyUs;
  const m = s.meters;
  const c = s.commands;
  return (
    `summary (${s.elapsedS.toFixed(1)} s, ${s.instances} engine instance(s), ${s.restarts} restart(s))\n` +
    `  commands ${c.sent}  acks ${c.acks}  errors ${c.errors}  lost ${c.lost}  unanswered ${c.unanswered}\n` +
    `  telemetry frames: meters ${s.telemetry.meters}  transport ${s.telemetry.transport}  health ${s.telemetry.health}   dropped ${s.telemetry.dropped}  shed ${s.telemetry.shed}\n` +
    `  command → ack latency: p50 ${us(l.p50)}  p90 ${us(l.p90)}  p99 ${us(l.p99)}  max ${us(l.max)}  (n = ${l.count})\n` +
    `  meters: playing ${m.playFrames} frames (silent ${m.playSilent}), peak ${(m.playFrames ? m.playPeakMin : 0).toFixed(3)}..${m.playPeakMax.toFixed(3)};  stopped ${m.stopFrames} frames (non-zero ${m.stopNonzero})\n` +
    `  transport: position advanced ${s.transport.rate.toFixed(0)} samples/s while playing = ${s.transport.ratio.toFixed(3)} × ${s.sampleRate} Hz over ${s.transport.wallS.toFixed(2)} s\n` +
    `  engine: xruns ${s.engine.xruns ?? "?"}  max DSP load ${(s.engine.dspMax * 100).toFixed(1)}%`
  );
}
