// `npm run demo [-- --duration S] [--bin PATH]`: the scripted session of the Rust `aura` example
// (examples/aura/demo.rs) through this package, against the `signal` binary, with a summary.
import { EngineSupervisor } from "./supervisor";
import { EngineError } from "./errors";
import type { CommandBodies, CommandName, TelemetryBodies } from "./generated";
import { argNum, percentiles, signalPath } from "./engine-path";

type Step = { at: number; label: string; run: () => Promise<unknown> | void };

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const durationS = argNum(argv, "--duration", 6);
  const sup = new EngineSupervisor({ spawn: { binary: signalPath(argv), args: ["--no-rt"] } });
  const client = await sup.start();
  const sampleRate = client.welcome!.sample_rate;
  const instances = new Set([client.welcome!.instance]);
  let restarts = 0;
  client.on("engineRestarted", (i) => (restarts++, instances.add(i)));
  const st = { sent: 0, acks: 0, errors: 0, lost: 0, lat: [] as number[], meters: 0, transport: 0, health: 0 };
  const send = <N extends CommandName>(name: N, body: CommandBodies[N]) => {
    st.sent++;
    const t0 = performance.now();
    return client.request(name, body).then(
      () => {
        st.acks++;
        st.lat.push((performance.now() - t0) * 1000);
      },
      (e: EngineError) => {
        if (e.fromEngine) st.errors++;
        else st.lost++;
      },
    );
  };
  // Meter judgement, as the Rust demo: frames count only once the transport change is acknowledged.
  let phase: "setup" | "playing" | "stopped" | "changing" = "setup";
  const m = { playFrames: 0, playSilent: 0, playMin: Infinity, playMax: 0, stopFrames: 0, stopNonzero: 0, transitional: 0 };
  client.onTelemetry("meters", (b) => {
    st.meters++;
    const peak = Math.max(0, ...b.peak);
    if (phase === "playing") {
      m.playFrames++;
      if (peak === 0) m.playSilent++;
      m.playMin = Math.min(m.playMin, peak);
      m.playMax = Math.max(m.playMax, peak);
    } else if (phase === "stopped") {
      m.stopFrames++;
      if (peak > 0) m.stopNonzero++;
    } else m.transitional++;
  });
  let health: TelemetryBodies["engine.health"] | null = null;
  let dspMax = 0;
  client.onTelemetry("engine.health", (h) => {
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
  const closeSegment = () => {
    if (seg) {
      posDelta += seg.pos - seg.pos0;
      wall += (seg.t - seg.t0) / 1000;
    }
    seg = null;
  };
  client.onTelemetry("transport.state", (t) => {
    st.transport++;
    const now = performance.now();
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
      phase = "stopped";
    } },
    { at: 0.12, label: "transport.play", run: async () => { phase = "changing"; await send("transport.play", {}); phase = "playing"; } },
    { at: 0.4, label: "gain ramp down to 0.25 over 200 ms", run: () => send("param.set", { node: 2, param: 0, value: 0.25, ramp_ms: 200 }) },
    { at: 0.5, label: "gain ramp up to 0.5 over 200 ms", run: () => send("param.set", { node: 2, param: 0, value: 0.5, ramp_ms: 200 }) },
    { at: 0.6, label: "transport.seek to 0:10", run: async () => { seeking = true; closeSegment(); await send("transport.seek", { sample: sampleRate * 10 }); seeking = false; } },
    { at: 0.65, label: "osc back to 440 Hz", run: () => send("param.set", { node: 1, param: 0, value: 440, ramp_ms: 200 }) },
    { at: 0.8, label: "transport.stop", run: async () => { closeSegment(); phase = "changing"; await send("transport.stop", {}); phase = "stopped"; } },
  ];
  const sweepSteps = Math.max(1, Math.floor(((0.55 - 0.18) * durationS) / 0.1));
  for (let i = 0; i <= sweepSteps; i++) {
    const x = i / sweepSteps;
    steps.push({ at: 0.18 + x * 0.37, label: "sweeping osc 220 → 880 Hz", run: () => send("param.set", { node: 1, param: 0, value: 220 * 4 ** x, ramp_ms: 100 }) });
  }
  steps.sort((a, b) => a.at - b.at);
  const t0 = performance.now();
  let label = "";
  const view = setInterval(() => {
    const h = health as TelemetryBodies["engine.health"] | null;
    console.log(`${((performance.now() - t0) / 1000).toFixed(1)} s  ${client.state}  meters ${st.meters}  acks ${st.acks}  xruns ${h?.xruns ?? "?"}  │ ${label}`);
  }, 500);
  const done: Promise<unknown>[] = [];
  for (const s of steps) {
    const wait = s.at * d - (performance.now() - t0);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    if (s.label !== label) label = s.label;
    done.push(Promise.resolve(s.run()));
  }
  await new Promise((r) => setTimeout(r, Math.max(0, d - (performance.now() - t0))));
  await Promise.all(done);
  clearInterval(view);
  const elapsed = (performance.now() - t0) / 1000;
  const l = percentiles(st.lat);
  const us = (x: number) => (Number.isFinite(x) ? `${x.toFixed(0)} µs` : "-");
  const rate = wall > 0 ? posDelta / wall : 0;
  const h = health as TelemetryBodies["engine.health"] | null;
  console.log(
    `\nsummary (${elapsed.toFixed(1)} s, ${instances.size} engine instance(s), ${restarts} restart(s))\n` +
      `  commands ${st.sent}  acks ${st.acks}  errors ${st.errors}  lost ${st.lost}  unanswered ${client.inFlight}\n` +
      `  telemetry frames: meters ${st.meters}  transport ${st.transport}  health ${st.health}   dropped ${h?.telemetry_dropped ?? 0}  shed ${h?.telemetry_shed ?? 0}\n` +
      `  command → ack latency: p50 ${us(l.p50)}  p90 ${us(l.p90)}  p99 ${us(l.p99)}  max ${us(l.max)}  (n = ${l.count})\n` +
      `  meters: playing ${m.playFrames} frames (silent ${m.playSilent}), peak ${(m.playFrames ? m.playMin : 0).toFixed(3)}..${m.playMax.toFixed(3)};  stopped ${m.stopFrames} frames (non-zero ${m.stopNonzero})\n` +
      `  transport: position advanced ${rate.toFixed(0)} samples/s while playing = ${(rate / sampleRate).toFixed(3)} × ${sampleRate} Hz over ${wall.toFixed(2)} s\n` +
      `  engine: xruns ${h?.xruns ?? "?"}  max DSP load ${(dspMax * 100).toFixed(1)}%`,
  );
  await sup.stop();
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
