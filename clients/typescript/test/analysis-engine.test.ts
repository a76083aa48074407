// scope and spectrum end to end against the real `signal` binary (its taps: `signal --help`; tap 2
// is a 1000 Hz sine of amplitude 0.5, -6.02 dBFS, always on). Two clients in turn: one with
// attachments (the default), one with `attachments: false` (JSON arrays): same types, same values.
// Skipped when the binary is missing (unless LOOPHOLE_REQUIRE_SIGNAL=1), and, saying so, when
// the binary has no analysis taps (welcome.taps absent or 0) unless LOOPHOLE_REQUIRE_ANALYSIS=1.
import "./helpers";
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { EngineSupervisor, EngineClient, EngineError, type ScopeFrame, type SpectrumFrame } from "../src/index";
import { signalBinary, sleep } from "./helpers";

const bin = signalBinary();
const skip = bin === null && process.env.LOOPHOLE_REQUIRE_SIGNAL !== "1" ? "signal binary not built (cargo build --release --example signal)" : false;
if (bin === null && !skip) throw new Error("LOOPHOLE_REQUIRE_SIGNAL=1 but the signal binary is missing");
const TONE_TAP = 2;
const TONE_HZ = 1000;
const TONE_DB = 20 * Math.log10(0.5);

let sup: EngineSupervisor;
let client: EngineClient;
let noAnalysis: string | false = false;

before(async () => {
  if (skip) return;
  sup = new EngineSupervisor({ spawn: { binary: bin!, args: ["--no-rt"] }, client: { reconnect: { initialMs: 20, maxMs: 200 } } });
  client = await sup.start();
  const taps = client.welcome!.taps;
  if (!(typeof taps === "number" && taps > 0)) {
    if (process.env.LOOPHOLE_REQUIRE_ANALYSIS === "1") throw new Error(`LOOPHOLE_REQUIRE_ANALYSIS=1 but this signal's welcome has taps ${taps}`);
    noAnalysis = `this signal has no analysis taps (welcome.taps ${taps}): build the engine of issue 14`;
  }
});
after(async () => {
  if (!skip) await sup.stop();
});

/** Skips the test (saying why) when the engine has no analysis streams. */
const needAnalysis = (t: TestContext) => (noAnalysis ? (t.skip(noAnalysis), true) : false);

function frames<T>(c: EngineClient, ev: "scope" | "spectrum", n: number, pred: (f: T) => boolean = () => true): Promise<T[]> {
  return new Promise((resolve) => {
    const got: T[] = [];
    const on = (f: T) => {
      if (!pred(f)) return;
      got.push(f);
      if (got.length === n) {
        c.off(ev, on as any);
        resolve(got);
      }
    };
    c.on(ev, on as any);
  });
}

function peak(s: SpectrumFrame): { bin: number; db: number } {
  let k = 1;
  for (let i = 1; i < s.bins; i++) if (s.db[i]! > s.db[k]!) k = i;
  return { bin: k, db: s.db[k]! };
}

/** One second-ish of analysis from a client: spectrum peak of the tone, scope extremes. */
async function analyse(c: EngineClient) {
  const spectra = frames<SpectrumFrame>(c, "spectrum", 3, (f) => f.tap === TONE_TAP);
  const scopes = frames<ScopeFrame>(c, "scope", 3, (f) => f.tap === TONE_TAP);
  await c.subscribe("spectrum", { tap: TONE_TAP, bins: 1024, rateHz: 30 });
  await c.subscribe("scope", { tap: TONE_TAP, points: 256, rateHz: 30 });
  const sp = (await spectra).at(-1)!;
  const sc = (await scopes).at(-1)!;
  await c.unsubscribe("spectrum");
  await c.unsubscribe("scope", TONE_TAP);
  return { sp, sc };
}

test("welcome: taps and attachments as negotiated", { skip, timeout: 20_000 }, (t) => {
  if (needAnalysis(t)) return;
  assert.ok(client.taps >= 3, `signal documents 3 taps, welcome says ${client.taps}`);
  assert.equal(client.attachments, true, "asked by default, and signal uses them");
});

test("attachments and JSON arrays give the same Float32Array frames: the tone's bin ±1, its level ±1 dB, the scope brackets ±0.5", { skip, timeout: 20_000 }, async (t) => {
  if (needAnalysis(t)) return;
  const before = client.attachmentStats;
  const a = await analyse(client);
  const after = client.attachmentStats;
  // A second engine for the client that does not ask (the engine serves one session at a time).
  const sup2 = new EngineSupervisor({ spawn: { binary: bin!, args: ["--no-rt"] }, client: { attachments: false } });
  const plain = await sup2.start();
  let j: Awaited<ReturnType<typeof analyse>>;
  try {
    assert.equal(plain.attachments, false);
    j = await analyse(plain);
    assert.deepEqual(plain.attachmentStats, { views: 0, copies: 0, joined: 0 }, "no attachment reached the client that did not ask");
  } finally {
    await sup2.stop();
  }

  for (const { sp, sc } of [a, j]) {
    assert.ok(sp.db instanceof Float32Array && sc.min instanceof Float32Array && sc.max instanceof Float32Array);
    assert.equal(sp.db.length, 1024);
    assert.equal(sp.hzPerBin, sp.sampleRate / 2048);
    const p = peak(sp);
    assert.ok(Math.abs(p.bin - TONE_HZ / sp.hzPerBin) <= 1, `peak at bin ${p.bin}, the tone is at ${(TONE_HZ / sp.hzPerBin).toFixed(2)}`);
    assert.ok(Math.abs(p.db - TONE_DB) <= 1, `peak ${p.db.toFixed(2)} dB, tone ${TONE_DB.toFixed(2)} dB`);
    assert.ok(Math.min(...sp.db) >= -160, "floor -160 dB");
    // Control for the peak check: a bin far from the tone is far below it.
    assert.ok(sp.db[Math.round((4 * TONE_HZ) / sp.hzPerBin)]! < p.db - 40);
    assert.equal(sc.min.length, 256);
    const lo = Math.min(...sc.min);
    const hi = Math.max(...sc.max);
    assert.ok(Math.abs(hi - 0.5) < 0.01 && Math.abs(lo + 0.5) < 0.01, `scope spans ${lo} … ${hi}, the tone ±0.5`);
    for (let i = 0; i < sc.points; i++) assert.ok(sc.min[i]! <= sc.max[i]!);
  }
  const viaAttachment = after.views + after.copies - (before.views + before.copies);
  assert.ok(viaAttachment >= 6, `the default client got its frames as attachments (${viaAttachment})`);
  // The two encodings of the same tone agree (different windows in time, so not bit-equal).
  assert.ok(Math.abs(peak(a.sp).bin - peak(j.sp).bin) <= 1);
  assert.ok(Math.abs(peak(a.sp).db - peak(j.sp).db) <= 1);
});

test("rate: 20 Hz spectrum gives 20 ± 20 % frames a second", { skip, timeout: 20_000 }, async (t) => {
  if (needAnalysis(t)) return;
  let n = 0;
  const count = () => n++;
  await client.subscribe("spectrum", { tap: TONE_TAP, bins: 256, rateHz: 20 });
  await sleep(300); // settle
  client.on("spectrum", count);
  await sleep(1500);
  client.off("spectrum", count);
  await client.unsubscribe("spectrum", TONE_TAP);
  assert.ok(n >= 24 && n <= 36, `${n} frames in 1.5 s at 20 Hz`);
});

test("engine checks: tap ≥ taps and bins not a power of two are out_of_range; refused ones are not kept", { skip, timeout: 20_000 }, async (t) => {
  if (needAnalysis(t)) return;
  await client.subscribe("scope", { tap: 0, points: 16, rateHz: 1 });
  await assert.rejects(client.subscribe("scope", { tap: client.taps, points: 64, rateHz: 10 }), (e: unknown) => e instanceof EngineError && e.code === "out_of_range" && e.fromEngine);
  await assert.rejects(client.subscribe("spectrum", { tap: 0, bins: 100, rateHz: 10 }), (e: unknown) => e instanceof EngineError && e.code === "out_of_range");
  await assert.rejects(client.subscribe("spectrum", { tap: 0, bins: 64, rateHz: 61 }), (e: unknown) => e instanceof EngineError && e.code === "out_of_range");
  assert.deepEqual([...(client as any).subs.keys()].filter((k: string) => k.includes("#")), ["scope#0"], "only the accepted one is kept (control: it is)");
  // A 9th key (too_many_subscriptions) needs 2 × taps > 8: with signal's taps it cannot happen;
  // the fake-engine tests and the Rust session tests cover the code.
  await client.unsubscribe("scope");
});

test("re-subscribed after a reconnect: analysis frames of the same keys come back", { skip, timeout: 20_000 }, async (t) => {
  if (needAnalysis(t)) return;
  await client.subscribe("scope", { tap: TONE_TAP, points: 64, rateHz: 30 });
  await frames<ScopeFrame>(client, "scope", 2);
  (client as any).sock.destroy(); // the connection drops; the engine keeps running
  const back = frames<ScopeFrame>(client, "scope", 3);
  await client.ready();
  const got = await back;
  assert.ok(got.every((f) => f.tap === TONE_TAP && f.points === 64));
  await client.unsubscribe("scope");
});
