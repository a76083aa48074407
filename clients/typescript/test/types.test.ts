// Compile-time checks: request() is typed by command name, its reply by the command, telemetry by
// stream. Each @ts-expect-error line must be an error, or tsc fails ("unused directive"), so a
// loosened type (e.g. `any` bodies) breaks the build: the negative control is built in.
import "./helpers";
import { test } from "node:test";
import assert from "node:assert/strict";
import { EngineClient, type KnownErrorCode, type ReplyOf, KNOWN_ERROR_CODES } from "../src/index";

async function typed(c: EngineClient): Promise<void> {
  const ack = await c.request("param.set", { node: 1, param: 0, value: 0.5 });
  const sample: number | undefined = ack.sample;
  const pong = await c.request("ping", { nonce: 1 });
  const n: number = pong.nonce;
  const w: ReplyOf<"hello"> = await c.request("hello", { protocol: 1, client: "x" });
  const inst: string = w.instance;
  // @ts-expect-error a string where the schema says integer
  await c.request("param.set", { node: "1", param: 0, value: 0.5 });
  // @ts-expect-error a required field missing
  await c.request("param.set", { node: 1, param: 0 });
  // @ts-expect-error a field the command does not have (the engine would answer invalid_field)
  await c.request("transport.play", { at: 0 });
  // @ts-expect-error a command the catalogue does not define
  await c.request("transport.rewind", {});
  // @ts-expect-error a stream outside the enumeration
  await c.subscribe("waveform", 30);
  // @ts-expect-error an analysis stream needs its tap and size, not a rate alone
  await c.subscribe("spectrum", 30);
  await c.subscribe("spectrum", { tap: 0, bins: 1024, rateHz: 30 });
  await c.subscribe("scope", { tap: 0, points: 256, rateHz: 30 });
  // @ts-expect-error scope takes points, not bins
  await c.subscribe("scope", { tap: 0, bins: 256, rateHz: 30 });
  // @ts-expect-error a plain stream has no tap
  await c.unsubscribe("meters", 0);
  await c.unsubscribe("scope", 1);
  c.onTelemetry("spectrum", (s) => {
    const db: Float32Array = s.db; // the same type from an attachment or from JSON arrays
    const hz: number = s.hzPerBin;
    // @ts-expect-error the wire's snake_case `hz_per_bin` is not on the decoded frame
    const raw: number = s.hz_per_bin;
    void db, hz, raw;
  });
  c.on("scope", (s) => {
    const lo: Float32Array = s.min;
    // @ts-expect-error min is a Float32Array, not number[]
    const arr: number[] = s.max;
    void lo, arr;
  });
  for await (const s of c.telemetry("scope")) {
    const spp: number = s.samplesPerPoint;
    void spp;
  }
  // @ts-expect-error pong has no field `sample_rate`
  const bad: number = pong.sample_rate;
  c.onTelemetry("meters", (m) => {
    const peaks: number[] = m.peak;
    // @ts-expect-error meters carry no `playing`
    const p: boolean = m.playing;
    void peaks, p;
  });
  void sample, n, inst, bad;
}

test("the typed API compiles as intended (checked by tsc); error codes come from the schema", () => {
  assert.equal(typeof typed, "function");
  const code: KnownErrorCode = "unknown_node";
  assert.ok(KNOWN_ERROR_CODES.includes(code));
});
