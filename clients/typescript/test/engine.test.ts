// Against the real `signal` example binary (cargo build --release --example signal).
// Skipped when the binary is missing, unless LOOPHOLE_REQUIRE_SIGNAL=1 (CI sets it).
import "./helpers";
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { EngineSupervisor, EngineClient, EngineError, FrameReader, PREFACE, encodeCommand, type Envelope } from "../src/index";
import { signalBinary, sleep, vectors } from "./helpers";

const bin = signalBinary();
const skip = bin === null && process.env.LOOPHOLE_REQUIRE_SIGNAL !== "1" ? "signal binary not built (cargo build --release --example signal)" : false;
if (bin === null && !skip) throw new Error("LOOPHOLE_REQUIRE_SIGNAL=1 but target/release/examples/signal is missing");

let sup: EngineSupervisor;
let client: EngineClient;

before(async () => {
  if (skip) return;
  sup = new EngineSupervisor({ spawn: { binary: bin!, args: ["--no-rt"], restartBackoffMs: { initial: 20 } }, client: { requestTimeoutMs: 5_000, reconnect: { initialMs: 20, maxMs: 200 } } });
  client = await sup.start();
});
after(async () => {
  if (skip) return;
  const pid = sup.pid;
  await sup.stop();
  if (pid !== null) assert.throws(() => process.kill(pid, 0), /ESRCH/, "stop() leaves no engine process");
});

const u = (s: { sample?: number }) => assert.ok(Number.isInteger(s.sample) && s.sample! >= 0, "ack carries sample");

test("handshake: welcome, instance equals the announcement, snapshot telemetry", { skip }, () => {
  const w = client.welcome!;
  assert.equal(w.protocol, 1);
  assert.match(w.instance, /^[0-9a-f]{16}$/);
  assert.equal(w.instance, sup.current!.instance);
  assert.ok(w.max_frame >= 64 && w.heartbeat_ms > 0 && w.timeout_ms > w.heartbeat_ms);
  assert.ok(client.transport !== null && client.health !== null, "snapshot after welcome");
});

test("every command of the catalogue", { skip }, async () => {
  const pong = await client.request("ping", { nonce: 77, t_client_us: 123 });
  assert.equal(pong.nonce, 77);
  assert.equal(pong.t_client_us, 123);
  const rt = await client.request("ping", { nonce: 78, rt: true });
  assert.ok(Number.isInteger(rt.sample));
  u(await client.request("transport.play", {}));
  u(await client.request("transport.tempo", { bpm: 120 }));
  u(await client.request("transport.seek", { sample: 48_000 }));
  u(await client.request("transport.loop", { start: 0, end: 96_000, enabled: true }));
  u(await client.request("transport.loop", { start: 0, end: 0, enabled: false }));
  u(await client.request("param.set", { node: 1, param: 0, value: 440 }));
  u(await client.request("param.set", { node: 2, param: 0, value: 0.25, ramp_ms: 50 }));
  u(await client.request("transport.stop", {}));
  await client.request("graph.add_node", { node: 100, kind: "gain" });
  await client.request("graph.add_node", { node: 101, kind: "gain" });
  await client.request("graph.connect", { from: 100, from_port: 0, to: 101, to_port: 0 });
  await client.request("graph.disconnect", { from: 100, from_port: 0, to: 101, to_port: 0 });
  await client.request("graph.remove_node", { node: 101 });
  await client.request("graph.remove_node", { node: 100 });
  await client.subscribe("engine.health", 10);
  await client.unsubscribe("engine.health");
  // goodbye and engine.shutdown are exercised by the session tests below and by stop().
});

async function rejectsWith(p: Promise<unknown>, code: string) {
  await assert.rejects(p, (e: unknown) => e instanceof EngineError && e.code === code && e.fromEngine, `expected ${code}`);
}

test("engine errors a client can provoke through the API", { skip }, async () => {
  await rejectsWith(client.request("param.set", { node: 999, param: 0, value: 1 }), "unknown_node");
  await rejectsWith(client.request("param.set", { node: 1, param: 9, value: 1 }), "unknown_param");
  await rejectsWith(client.request("param.set", { node: 1, param: 0, value: 1e9 }), "out_of_range");
  await rejectsWith(client.request("transport.tempo", { bpm: 5 }), "out_of_range");
  await client.request("graph.add_node", { node: 200, kind: "osc" });
  await rejectsWith(client.request("graph.add_node", { node: 200, kind: "osc" }), "node_exists");
  await rejectsWith(client.request("graph.add_node", { node: 201, kind: "warp_drive" }), "unknown_kind");
  await rejectsWith(client.request("graph.remove_node", { node: 4242 }), "unknown_node");
  await client.request("graph.remove_node", { node: 200 });
  await rejectsWith(client.request("hello", { protocol: 1, client: "again" }), "already_established");
  await rejectsWith((client.request as any)("transport.rewind", {}), "unknown_message");
  await rejectsWith((client.request as any)("param.set", { node: 1, param: 0, value: 1, ramp: 5 }), "invalid_field");
  // The connection survived all of them.
  assert.equal((await client.request("ping", { nonce: 1 })).nonce, 1);
});

test("a string with a lone surrogate is not_sent (JSON.stringify escapes it, the engine would answer invalid_json without ref: no answer, ever); control: a paired one travels as UTF-8 and the engine answers", { skip }, async () => {
  const diagnostics: string[] = [];
  const onError = (b: { code: string }) => diagnostics.push(b.code);
  client.on("engineError", onError);
  try {
    // Control first: the same command with a well-formed astral character is sent and answered.
    await rejectsWith(client.request("graph.add_node", { node: 202, kind: "\u{1f3b5}" }), "unknown_kind");
    for (const kind of ["\ud800", "x\udfff", "\udc00\ud800"]) {
      // timeoutMs 0: the request must settle on its own, not by a timer.
      const r = client.request("graph.add_node", { node: 202, kind }, { timeoutMs: 0 });
      const got = await Promise.race([r.then(() => "resolved", (e: unknown) => (e instanceof EngineError ? e.code : String(e))), sleep(1_000).then(() => "no settlement within 1 s")]);
      assert.equal(got, "not_sent", JSON.stringify(kind));
    }
    assert.equal((await client.request("ping", { nonce: 2 })).nonce, 2);
    assert.deepEqual(diagnostics, [], "the engine was never sent a frame it could not read");
  } finally {
    client.off("engineError", onError);
  }
});

test("bad_token and session_busy end in a typed failure, not a hang", { skip }, async () => {
  const wrong = new EngineClient({ port: sup.current!.port }, { token: "wrong", reconnect: false });
  const states: string[] = [];
  wrong.on("state", (s) => states.push(s));
  // The engine's refusal itself, not "client is failed" (the reason used to reach `disconnected` only).
  await assert.rejects(wrong.start(), (e: unknown) => e instanceof EngineError && e.code === "bad_token" && e.fromEngine && /^bad_token: ./.test(e.message));
  assert.equal(wrong.state, "failed");
  const reasons: string[] = [];
  const second = new EngineClient({ port: sup.current!.port }, { token: (sup as any).token, reconnect: false });
  second.on("disconnected", (r) => reasons.push(r));
  await assert.rejects(second.start(), (e: unknown) => e instanceof EngineError && e.code === "session_busy" && e.fromEngine);
  assert.match(reasons.join(" "), /session_busy/);
});

test("a hello no retry can heal (client name over 64 bytes: invalid_field after the retry without attachments; a name the encoder refuses: not_sent) ends in failed after one connection, not a reconnect loop; control: a 64-byte name reaches session_busy", { skip }, async () => {
  for (const [clientName, code] of [["x".repeat(65), "invalid_field"], ["a\ud800", "not_sent"]] as const) {
    const bad = new EngineClient({ port: sup.current!.port }, { token: (sup as any).token, clientName, reconnect: { initialMs: 5, maxMs: 20 } });
    const reasons: string[] = [];
    bad.on("disconnected", (r) => reasons.push(r));
    const got = await Promise.race([bad.start().then(() => "ready", (e: unknown) => (e instanceof EngineError ? e.code : String(e))), sleep(2_000).then(() => "no settlement within 2 s")]);
    const n = reasons.length;
    await bad.close();
    assert.equal(got, code, `${clientName.slice(0, 8)}…: ${n} connections, ${reasons[0]}`);
    assert.equal(bad.state, "closed");
    assert.equal(n, 1, reasons.join("; "));
    assert.match(reasons[0]!, /^(invalid_field|not_sent): /);
  }
  const ok = new EngineClient({ port: sup.current!.port }, { token: (sup as any).token, clientName: "x".repeat(64), reconnect: false });
  const reasons: string[] = [];
  ok.on("disconnected", (r) => reasons.push(r));
  await assert.rejects(ok.start());
  assert.match(reasons.join(" "), /session_busy/);
});

test("telemetry arrives at the subscribed rate (±20%), as events and as a latest-value iterator", { skip }, async () => {
  let n = 0;
  const off = client.onTelemetry("meters", (m) => {
    assert.equal(m.peak.length, m.rms.length);
    n++;
  });
  await client.subscribe("meters", 50);
  n = 0;
  const t0 = Date.now();
  await sleep(1000);
  const rate = (n * 1000) / (Date.now() - t0);
  off();
  assert.ok(rate >= 40 && rate <= 60, `meters at ${rate.toFixed(1)} Hz, asked 50`);
  // Iterator: a consumer that sleeps 200 ms between reads never sees a backlog.
  const ac = new AbortController();
  let got = 0;
  const t1 = Date.now();
  for await (const m of client.telemetry("meters", { signal: ac.signal })) {
    assert.ok(Array.isArray(m.peak));
    if (++got === 3) ac.abort();
    else await sleep(200);
  }
  assert.equal(got, 3);
  assert.ok(Date.now() - t1 >= 380, "each read waited for a fresh frame or took the latest");
  await client.unsubscribe("meters");
});

test("10 000 pipelined commands each settle exactly once", { skip }, async () => {
  const N = 10_000;
  let ok = 0;
  let maxInFlight = 0;
  const seen = new Set<number>();
  const all = Array.from({ length: N }, (_, i) => {
    const p = client.request("param.set", { node: 2, param: 0, value: (i % 100) / 100 }).then((r) => {
      assert.ok(!seen.has(i), "settled twice");
      seen.add(i);
      ok++;
      return r;
    });
    maxInFlight = Math.max(maxInFlight, client.inFlight);
    return p;
  });
  await Promise.all(all);
  assert.equal(ok, N);
  assert.ok(maxInFlight <= 256 + 2, `in flight bounded: ${maxInFlight}`);
  assert.equal(client.inFlight, 0);
  assert.equal(client.queued, 0);
});

test("kill -9 → supervisor restart → engineRestarted → re-subscribed → commands work", { skip }, async () => {
  await client.subscribe("transport.state", 20);
  const oldPid = sup.pid!;
  const oldInstance = client.welcome!.instance;
  const restarted = new Promise<[string, string]>((r) => client.once("engineRestarted", (a, b) => r([a, b])));
  // A command in flight when the engine dies settles outcome_unknown (or not_sent), never hangs.
  const inflight = client.request("transport.play", {}).then(() => "ok", (e: EngineError) => e.code);
  process.kill(oldPid, "SIGKILL");
  const [now, before] = await restarted;
  assert.equal(before, oldInstance);
  assert.notEqual(now, oldInstance);
  assert.notEqual(sup.pid, oldPid);
  assert.ok(["ok", "outcome_unknown"].includes(await inflight));
  // Telemetry flows again without the test subscribing again (the one snapshot frame after
  // welcome would not reach this count: 20 Hz for 500 ms is ~10).
  let frames = 0;
  const off = client.onTelemetry("transport.state", () => frames++);
  await sleep(500);
  off();
  assert.ok(frames >= 5, `re-subscribed: ${frames} transport.state frames in 500 ms`);
  assert.equal((await client.request("ping", { nonce: 5 })).nonce, 5);
  u(await client.request("transport.play", {}));
});
