// Golden vectors (docs/specs/ipc/vectors/vectors.json) both ways. Data-driven: when the spec adds,
// changes or removes a vector, these tests follow without an edit.
import "./helpers";
import { test } from "node:test";
import assert from "node:assert/strict";
import { FrameReader, PREFACE, attachmentOf, commandJson, decodeScope, decodeSpectrum, encodeCommand, encodeFrame, ProtocolError, type Envelope } from "../src/index";
import { vectors } from "./helpers";

const all = vectors();
const bytes = (hex: string) => Buffer.from(hex, "hex");

function readWhole(buf: Buffer, preface = true, attachments = false): Envelope[] {
  return new FrameReader({ preface, attachments }).push(buf);
}
function readByteByByte(buf: Buffer, preface = true, attachments = false): Envelope[] {
  const r = new FrameReader({ preface, attachments });
  const out: Envelope[] = [];
  for (let i = 0; i < buf.length; i++) out.push(...r.push(buf.subarray(i, i + 1)));
  assert.equal(r.buffered, 0);
  return out;
}

test("the vector file has both directions and negatives (the loops below are not empty)", () => {
  assert.ok(all.filter((v) => v.direction === "engine_to_client" && v.kind !== "negative").length >= 10);
  assert.ok(all.filter((v) => v.direction === "client_to_engine" && v.canonical).length >= 10);
  assert.ok(all.filter((v) => v.kind === "negative").length >= 10);
});

for (const v of all.filter((v) => v.direction === "engine_to_client" && v.kind !== "negative")) {
  test(`reader: ${v.name} in one chunk and byte by byte`, () => {
    const wire = v.kind === "frame" ? Buffer.concat([PREFACE, bytes(v.hex)]) : bytes(v.hex);
    const want = v.kind === "frame" ? [v.json] : v.json;
    const asked = v.attachment !== undefined; // a client that asked for attachments
    for (const got of [readWhole(wire, true, asked), readByteByByte(wire, true, asked)]) {
      assert.deepEqual(got, want);
      if (asked) assert.deepEqual(Array.from(attachmentOf(got[0]!)!), v.attachment);
      else for (const e of got) assert.equal(attachmentOf(e), null);
    }
  });
}

// framing.md §3.1: the spec's attachment frames, as a client that asked and one that did not.
const attached = all.filter((v) => v.attachment !== undefined);
test("the vector file has attachment frames for scope and spectrum", () => {
  assert.deepEqual(attached.map((v) => v.json.name).sort(), ["scope", "spectrum"]);
});
for (const v of attached) {
  test(`${v.name}: the same frame as ${v.same_values_as} through decodeScope/decodeSpectrum; refused by a client that did not ask`, () => {
    const twin = all.find((x) => x.name === v.same_values_as)!;
    assert.ok(twin, `same_values_as ${v.same_values_as} exists`);
    const decode = v.json.name === "scope" ? decodeScope : decodeSpectrum;
    const a = decode(readWhole(bytes(v.hex), false, true)[0]!);
    const j = decode(readWhole(bytes(twin.hex), false, true)[0]!);
    assert.deepEqual(a, j);
    // The attachment starts at frame offset 8 + json_len, a multiple of 8 (framing.md §3.1).
    const jsonLen = bytes(v.hex).readUInt16BE(6);
    assert.equal(jsonLen % 8, 0);
    assert.equal(bytes(v.hex).length - 8 - jsonLen, v.attachment!.length * 4);
    assert.throws(() => readWhole(bytes(v.hex), false, false), (e: unknown) => e instanceof ProtocolError && e.code === "bad_header");
  });
}

// The reader is also a correct decoder of what clients send (including every non-canonical form).
for (const v of all.filter((v) => v.direction === "client_to_engine" && v.kind !== "negative")) {
  test(`reader decodes client vector ${v.name}`, () => {
    const pre = v.kind === "stream" && v.preface === true;
    const want = v.kind === "frame" ? [v.json] : v.json;
    assert.deepEqual(readWhole(bytes(v.hex), pre), want);
    assert.deepEqual(readByteByByte(bytes(v.hex), pre), want);
  });
}

for (const v of all.filter((v) => v.direction === "client_to_engine" && v.canonical === true)) {
  test(`encoder: ${v.name} byte-identical`, () => {
    const envs: Envelope[] = v.kind === "frame" ? [v.json] : v.json;
    const frames = envs.map((e) => encodeCommand(e.name, e.id!, e.body));
    const got = Buffer.concat(v.kind === "stream" && v.preface ? [PREFACE, ...frames] : frames);
    assert.equal(got.toString("hex"), v.hex);
  });
}

for (const v of all.filter((v) => v.canonical === false && v.direction === "client_to_engine" && v.kind === "frame")) {
  test(`encoder: non-canonical ${v.name} re-encodes to its canonical ${v.same_as}`, () => {
    const canon = all.find((c) => c.name === v.same_as)!;
    assert.ok(canon, `same_as ${v.same_as} exists`);
    const env = readWhole(bytes(v.hex), false)[0]!;
    assert.equal(encodeCommand(env.name, env.id!, env.body).toString("hex"), canon.hex);
  });
}

// Framing-layer negatives, read as if the engine had sent them: the reader must refuse each with
// the code the spec gives (a preface mismatch has no code: the reader says bad_preface).
const framingNegatives = all.filter((v) => v.kind === "negative" && (v.layer === "preface" || v.layer === "frame" || v.error === "invalid_json"));
test("there are framing negatives to check", () => assert.ok(framingNegatives.length >= 6));
for (const v of framingNegatives) {
  test(`reader refuses ${v.name} with ${v.error ?? "bad_preface"} (whole and byte by byte)`, () => {
    const wire = v.state === "connected" ? bytes(v.hex) : Buffer.concat([PREFACE, bytes(v.hex)]);
    const code = v.error ?? "bad_preface";
    // A vector may state the limit in force (`frame_limit`: 4 096 before hello; else `max_frame`).
    const maxFrame = (v.frame_limit ?? v.max_frame) as number | undefined;
    const whole = (b: Buffer) => new FrameReader({ maxFrame }).push(b);
    const byteByByte = (b: Buffer) => {
      const r = new FrameReader({ maxFrame });
      for (const x of b) r.push(Buffer.from([x]));
    };
    for (const read of [whole, byteByByte]) {
      assert.throws(() => read(wire), (e: unknown) => e instanceof ProtocolError && e.code === code);
    }
  });
}

test("frame_too_large is raised on the header alone, before any payload byte", () => {
  const v = all.find((x) => x.name === "neg.frame_too_large")!;
  assert.equal(v.partial, true);
  const r = new FrameReader({ maxFrame: 65536 });
  r.push(PREFACE);
  assert.throws(() => r.push(bytes(v.hex)), (e: unknown) => e instanceof ProtocolError && e.code === "frame_too_large");
  // Negative control: the same announced length passes the header check with a larger limit.
  const big = new FrameReader({ maxFrame: 1 << 24 });
  assert.deepEqual(big.push(Buffer.concat([PREFACE, bytes(v.hex)])), []);
});

test("a failed reader stays failed", () => {
  const r = new FrameReader();
  assert.throws(() => r.push(Buffer.from("GET / HTTP/1.1\r\n")));
  assert.throws(() => r.push(PREFACE), (e: unknown) => e instanceof ProtocolError && e.code === "bad_preface");
});

test("many frames in one chunk, one frame over many chunks, random chunking", () => {
  const frames = Array.from({ length: 50 }, (_, i) => encodeFrame(JSON.stringify({ type: "telemetry", name: "meters", body: { peak: [i / 64], rms: [i / 128] } })));
  const wire = Buffer.concat([PREFACE, ...frames]);
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (let round = 0; round < 20; round++) {
    const r = new FrameReader();
    const out: Envelope[] = [];
    for (let at = 0; at < wire.length; ) {
      const n = 1 + Math.floor(rnd() * 40);
      out.push(...r.push(wire.subarray(at, at + n)));
      at += n;
    }
    assert.equal(out.length, 50);
    assert.deepEqual(out[49]!.body, { peak: [49 / 64], rms: [49 / 128] });
  }
});

test("encoder measures bytes, not characters", () => {
  const json = commandJson("graph.add_node", 1, { node: 1, kind: "é✓" });
  const f = encodeCommand("graph.add_node", 1, { node: 1, kind: "é✓" });
  assert.equal(f.readUInt32BE(0), Buffer.byteLength(json));
  assert.notEqual(f.readUInt32BE(0), json.length); // negative control: characters would be wrong
  assert.deepEqual(new FrameReader({ preface: false }).push(f)[0]!.body, { node: 1, kind: "é✓" });
});

test("encoder refuses non-finite numbers, ids outside u32 and frames over the limit", () => {
  assert.throws(() => commandJson("param.set", 1, { node: 1, param: 0, value: NaN }));
  assert.throws(() => commandJson("param.set", 1, { node: 1, param: 0, value: Infinity }));
  assert.throws(() => commandJson("ping", 2 ** 32, { nonce: 1 }));
  assert.throws(() => encodeCommand("graph.add_node", 1, { node: 1, kind: "x".repeat(5000) }, 4096));
  assert.ok(encodeCommand("graph.add_node", 1, { node: 1, kind: "x".repeat(4000) }, 4096));
});

test("encoder refuses a lone surrogate in any string (its \\u escape is invalid_json, errors.md §2), keeps pairs and a literal backslash-u", () => {
  for (const body of [{ node: 1, kind: "\ud800" }, { node: 1, kind: "a\udfffb" }, { node: 1, kind: "\udc00\ud800" }, { node: 1, kind: "ok", ["\ud801"]: 1 }]) {
    assert.throws(() => commandJson("graph.add_node", 1, body), /lone surrogate/, JSON.stringify(body));
  }
  // Controls: a pair is written as UTF-8 and reads back; the text \ud800 (backslash, u, ...) is an escaped backslash.
  for (const kind of ["\u{1f3b5}", "\\ud800", "\\\\ud800"]) {
    const env = new FrameReader({ preface: false }).push(encodeCommand("graph.add_node", 1, { node: 1, kind }))[0]!;
    assert.equal(env.body.kind, kind);
  }
});
