// Frames with a binary attachment (framing.md §3, envelope.md `scope`/`spectrum`): the reader's
// view-or-copy rule, every malformed case with its code, and the analysis decoders in both
// encodings. Each refusal is paired with a control: the same frame, fixed, is accepted.
import "./helpers";
import { test } from "node:test";
import assert from "node:assert/strict";
import { ATTACHMENT_DATA, FrameReader, PREFACE, ProtocolError, attachmentOf, decodeScope, decodeSpectrum, encodeFrame, type Envelope } from "../src/index";
import { attachmentFrame, atOffset } from "./helpers";

const scopeEnv = (n: number) => ({ type: "telemetry", name: "scope", body: { tap: 1, points: n, samples_per_point: 4, sample: 48_000, missed: 0 } });
const spectrumEnv = (n: number) => ({ type: "telemetry", name: "spectrum", body: { tap: 0, bins: n, sample_rate: 48_000, sample: 96_000, missed: 3 } });
const ramp = (n: number, k = 1) => Float32Array.from({ length: n }, (_, i) => (i - n / 2) * k * 0.015625 + 0); // exact in f32; + 0: no -0 (JSON writes it as 0)

const reader = () => new FrameReader({ preface: false, attachments: true });
const refuses = (code: string, fn: () => unknown) => assert.throws(fn, (e: unknown) => e instanceof ProtocolError && e.code === code, `expected ${code}`);

test("an attachment in one aligned chunk is a view over the received bytes: no copy", () => {
  const data = ramp(32);
  const chunk = atOffset(attachmentFrame(scopeEnv(16), data), 0);
  const r = reader();
  const [env] = r.push(chunk);
  const got = attachmentOf(env!)!;
  assert.ok(got instanceof Float32Array);
  assert.deepEqual(Array.from(got), Array.from(data));
  assert.equal(got.buffer, chunk.buffer, "same memory as the chunk");
  assert.deepEqual(r.stats, { views: 1, copies: 0, joined: 0 });
  // The JSON part was parsed from the first json_len bytes only; the member is on the envelope.
  assert.deepEqual(env!.attachment, { format: "f32le", bytes: 128 });
  // JSON.stringify skips symbol keys whatever their enumerability: ask the property itself.
  assert.equal(Object.getOwnPropertyDescriptor(env, ATTACHMENT_DATA)?.enumerable, false, "the data is a non-enumerable member");
});

test("an unaligned chunk costs exactly one copy, with the same values (the control above is a view)", () => {
  const data = ramp(32);
  for (const off of [1, 2, 3, 5]) {
    const chunk = atOffset(attachmentFrame(scopeEnv(16), data), off);
    const r = reader();
    const got = attachmentOf(r.push(chunk)[0]!)!;
    assert.notEqual(got.buffer, chunk.buffer, `offset ${off}: copied`);
    assert.equal(got.byteOffset % 4, 0);
    assert.deepEqual(Array.from(got), Array.from(data));
    assert.deepEqual(r.stats, { views: 0, copies: 1, joined: 0 });
  }
  // Offset 4 is 4-aligned: a view again (the f32 rule needs 4, not 8).
  const chunk = atOffset(attachmentFrame(scopeEnv(16), data), 4);
  const r = reader();
  assert.equal(attachmentOf(r.push(chunk)[0]!)!.buffer, chunk.buffer);
  assert.deepEqual(r.stats, { views: 1, copies: 0, joined: 0 });
});

test("behind an odd-sized JSON frame in the same chunk: the case that copies in practice", () => {
  const plain = encodeFrame('{"type":"telemetry","name":"meters","body":{"peak":[0.5],"rms":[0.25]}}'); // 8 + 69 bytes
  assert.notEqual(plain.length % 4, 0);
  const r = reader();
  const envs = r.push(atOffset(Buffer.concat([plain, attachmentFrame(spectrumEnv(16), ramp(16))]), 0));
  assert.equal(envs.length, 2);
  assert.deepEqual(Array.from(attachmentOf(envs[1]!)!), Array.from(ramp(16)));
  assert.deepEqual(r.stats, { views: 0, copies: 1, joined: 0 });
});

test("a frame over many chunks is joined once into fresh memory, where the attachment is aligned: a view of the join", () => {
  const data = ramp(64);
  const wire = Buffer.concat([PREFACE, attachmentFrame(scopeEnv(32), data), attachmentFrame(spectrumEnv(16), ramp(16, 2))]);
  const r = new FrameReader({ attachments: true });
  const out: Envelope[] = [];
  for (let i = 0; i < wire.length; i++) out.push(...r.push(wire.subarray(i, i + 1)));
  assert.equal(out.length, 2);
  assert.deepEqual(Array.from(attachmentOf(out[0]!)!), Array.from(data));
  assert.deepEqual(Array.from(attachmentOf(out[1]!)!), Array.from(ramp(16, 2)));
  assert.deepEqual(r.stats, { views: 2, copies: 0, joined: 2 });
  assert.equal(r.buffered, 0);
});

test("the attachment bytes are not JSON: bytes that are not UTF-8 after json_len are fine", () => {
  const bad = Float32Array.from([NaN, -Infinity, 3.4e38, -0]); // 0xff.., 0x80.. bytes
  const f = attachmentFrame(scopeEnv(2), bad);
  const got = attachmentOf(reader().push(f)[0]!)!;
  assert.ok(Number.isNaN(got[0]));
  assert.equal(got[1], -Infinity);
  // Control: the same payload read as one plain JSON frame is refused.
  const plain = Buffer.from(f);
  plain[5] = 0;
  plain.writeUInt16BE(0, 6);
  assert.throws(() => reader().push(plain), ProtocolError);
});

test("ATTACHMENT flag from an engine this client did not ask: bad_header (control: asked, accepted)", () => {
  const f = attachmentFrame(scopeEnv(16), ramp(32));
  refuses("bad_header", () => new FrameReader({ preface: false }).push(f));
  assert.equal(reader().push(f).length, 1);
});

test("other flag bits stay bad_header even when attachments are on", () => {
  for (const flags of [0x02, 0x03, 0x80, 0xff]) refuses("bad_header", () => reader().push(attachmentFrame(scopeEnv(16), ramp(32), { flags })));
  assert.equal(reader().push(attachmentFrame(scopeEnv(16), ramp(32), { flags: 0x01 })).length, 1);
});

test("json_len: not a multiple of 8, larger than length, below 2: bad_header", () => {
  const good = attachmentFrame(scopeEnv(16), ramp(32));
  const jl = good.readUInt16BE(6);
  const len = good.readUInt32BE(0);
  refuses("bad_header", () => reader().push(attachmentFrame(scopeEnv(16), ramp(32), { jsonLen: jl - 4 })));
  refuses("bad_header", () => reader().push(attachmentFrame(scopeEnv(16), ramp(32), { jsonLen: jl + 4 })));
  refuses("bad_header", () => reader().push(attachmentFrame(scopeEnv(16), ramp(32), { jsonLen: len + 8 })));
  refuses("bad_header", () => reader().push(attachmentFrame(scopeEnv(16), ramp(32), { jsonLen: 0 })));
  // An attachment that is not whole f32 values (json_len fine, length - json_len = 6).
  refuses("bad_header", () => reader().push(attachmentFrame(scopeEnv(16), new Float32Array(0), { raw: Buffer.alloc(6), member: { format: "f32le", bytes: 6 } })));
  // Control: json_len exactly as written is accepted, and a flag-less frame with reserved != 0 is still refused.
  assert.equal(reader().push(good).length, 1);
  const rsv = Buffer.from(encodeFrame('{"type":"telemetry","name":"x","body":{}}'));
  rsv.writeUInt16BE(8, 6);
  refuses("bad_header", () => reader().push(rsv));
});

test("json_len that cuts the JSON short is invalid_json (the JSON is the first json_len bytes, nothing else)", () => {
  const good = attachmentFrame(scopeEnv(16), ramp(32));
  refuses("invalid_json", () => reader().push(attachmentFrame(scopeEnv(16), ramp(32), { jsonLen: good.readUInt16BE(6) - 8 })));
});

test("flag without the `attachment` member, member without the flag, wrong bytes, wrong format: bad_attachment", () => {
  refuses("bad_attachment", () => reader().push(attachmentFrame(scopeEnv(16), ramp(32), { member: null })));
  refuses("bad_attachment", () => reader().push(attachmentFrame(scopeEnv(16), ramp(32), { member: { format: "f32le", bytes: 124 } })));
  refuses("bad_attachment", () => reader().push(attachmentFrame(scopeEnv(16), ramp(32), { member: { format: "f32le", bytes: "128" } })));
  refuses("bad_attachment", () => reader().push(attachmentFrame(scopeEnv(16), ramp(32), { member: { format: "f64le", bytes: 128 } })));
  refuses("bad_attachment", () => reader().push(attachmentFrame(scopeEnv(16), ramp(32), { member: { bytes: 128 } })));
  const withMember = encodeFrame(JSON.stringify({ ...scopeEnv(16), attachment: { format: "f32le", bytes: 0 } }));
  refuses("bad_attachment", () => reader().push(withMember));
  refuses("bad_attachment", () => new FrameReader({ preface: false }).push(withMember));
  // Control: the exact member is accepted.
  assert.equal(reader().push(attachmentFrame(scopeEnv(16), ramp(32), { member: { format: "f32le", bytes: 128 } })).length, 1);
});

test("a refusal fails the reader for good (the connection must be closed)", () => {
  const r = reader();
  refuses("bad_attachment", () => r.push(attachmentFrame(scopeEnv(16), ramp(32), { member: null })));
  refuses("bad_attachment", () => r.push(attachmentFrame(scopeEnv(16), ramp(32))));
});

test("scope: the same ScopeFrame from the attachment and from JSON arrays; min/max are views of the attachment", () => {
  const n = 16;
  const min = ramp(n, -1);
  const max = ramp(n, 1);
  const both = new Float32Array(2 * n);
  both.set(min, 0);
  both.set(max, n);
  const a = decodeScope(reader().push(attachmentFrame(scopeEnv(n), both))[0]!);
  const env = scopeEnv(n);
  const j = decodeScope(reader().push(encodeFrame(JSON.stringify({ ...env, body: { ...env.body, min: Array.from(min), max: Array.from(max) } })))[0]!);
  assert.deepEqual(a, j);
  assert.ok(a.min instanceof Float32Array && j.max instanceof Float32Array);
  assert.equal(a.min.buffer, a.max.buffer, "one attachment, two views");
  assert.deepEqual({ tap: a.tap, points: a.points, samplesPerPoint: a.samplesPerPoint, sample: a.sample, missed: a.missed }, { tap: 1, points: 16, samplesPerPoint: 4, sample: 48_000, missed: 0 });
  // Control for the equality: different data gives a different frame.
  const other = decodeScope(reader().push(attachmentFrame(scopeEnv(n), ramp(2 * n, 3)))[0]!);
  assert.notDeepEqual(other, j);
});

test("spectrum: the same SpectrumFrame from either encoding", () => {
  const n = 32;
  const db = Float32Array.from({ length: n }, (_, k) => (k === 5 ? 0 : -160 + k));
  const a = decodeSpectrum(reader().push(attachmentFrame(spectrumEnv(n), db))[0]!);
  const env = spectrumEnv(n);
  const j = decodeSpectrum(reader().push(encodeFrame(JSON.stringify({ ...env, body: { ...env.body, db: Array.from(db) } })))[0]!);
  assert.deepEqual(a, j);
  assert.equal(a.hzPerBin, 750);
  assert.equal(a.sampleRate, 48_000);
  assert.equal(a.db[5], 0);
});

test("analysis bodies that break the spec: wrong attachment size, array and attachment both, short arrays, missing fields", () => {
  refuses("bad_attachment", () => decodeScope(reader().push(attachmentFrame(scopeEnv(16), ramp(31)))[0]!));
  refuses("bad_attachment", () => decodeSpectrum(reader().push(attachmentFrame(spectrumEnv(16), ramp(32)))[0]!));
  const s = spectrumEnv(16);
  refuses("bad_attachment", () => decodeSpectrum(reader().push(attachmentFrame({ ...s, body: { ...s.body, db: [] } }, ramp(16)))[0]!));
  refuses("invalid_envelope", () => decodeSpectrum(reader().push(encodeFrame(JSON.stringify({ ...s, body: { ...s.body, db: Array(15).fill(-1) } })))[0]!));
  refuses("invalid_envelope", () => decodeSpectrum(reader().push(encodeFrame(JSON.stringify({ ...s, body: { ...s.body, db: [...Array(15).fill(-1), "x"] } })))[0]!));
  const { tap: _t, ...noTap } = s.body;
  refuses("invalid_envelope", () => decodeSpectrum(reader().push(attachmentFrame({ ...s, body: noTap }, ramp(16)))[0]!));
  refuses("invalid_envelope", () => decodeScope(reader().push(encodeFrame(JSON.stringify(scopeEnv(16))))[0]!)); // no min/max, no attachment
  // Controls: the well-formed ones decode.
  assert.equal(decodeSpectrum(reader().push(attachmentFrame(spectrumEnv(16), ramp(16)))[0]!).bins, 16);
  assert.equal(decodeScope(reader().push(attachmentFrame(scopeEnv(16), ramp(32)))[0]!).points, 16);
});
