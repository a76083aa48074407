// Part of `npm run bench` (also alone: `npm run bench -- --analysis-only`): one 1024-bin spectrum
// frame decoded from its two encodings, in the same run, as ratios. Not a test.
//  - JSON form: the body's `db` array as the engine writes it (each value the shortest text of
//    its f32), read by FrameReader and turned into a Float32Array by decodeSpectrum (what the
//    client's `spectrum` event costs); and JSON.parse of that payload alone (the floor of JSON).
//  - attachment form: FrameReader (JSON of the small envelope + a Float32Array view) and
//    decodeSpectrum; the same at an unaligned offset (one copy); and the view alone.
import { FrameReader, HEADER_LEN, FLAG_ATTACHMENT, ENCODING_JSON, encodeFrame } from "./codec";
import { decodeSpectrum } from "./analysis";

const BINS = 1024;

/** The shortest decimal text that reads back as the same f32 (what the engine's encoder writes). */
function f32Text(v: number): string {
  for (let p = 1; p <= 9; p++) {
    const t = Number(v.toPrecision(p));
    if (Math.fround(t) === v) return String(t).includes(".") || String(t).includes("e") ? String(t) : `${t}.0`;
  }
  return String(v);
}

/** A plausible spectrum: a tone at bin 43 over a noise floor, values as f32. */
export function spectrumValues(n = BINS): Float32Array {
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  return Float32Array.from({ length: n }, (_, k) => Math.max(-160, -6.6 - 12 * Math.abs(k - 43) ** 0.7 - 30 * rnd()));
}

const body = (n: number) => `"tap":2,"bins":${n},"sample_rate":48000,"sample":4800000,"missed":0`;

export function spectrumFrames(db: Float32Array): { json: Buffer; attachment: Buffer } {
  const n = db.length;
  const json = encodeFrame(`{"type":"telemetry","name":"spectrum","body":{${body(n)},"db":[${Array.from(db, f32Text).join(",")}]}}`);
  let env = `{"type":"telemetry","name":"spectrum","attachment":{"format":"f32le","bytes":${4 * n}},"body":{${body(n)}}}`;
  while (Buffer.byteLength(env) % 8 !== 0) env += " ";
  const jl = Buffer.byteLength(env);
  const attachment = Buffer.alloc(HEADER_LEN + jl + 4 * n);
  attachment.writeUInt32BE(jl + 4 * n, 0);
  attachment[4] = ENCODING_JSON;
  attachment[5] = FLAG_ATTACHMENT;
  attachment.writeUInt16BE(jl, 6);
  attachment.write(env, HEADER_LEN, "utf8");
  for (let i = 0; i < n; i++) attachment.writeFloatLE(db[i]!, HEADER_LEN + jl + 4 * i);
  return { json, attachment };
}

/**
 * µs per call of each fn: `rounds` rounds, each timing every fn for `n[i]` calls in turn
 * (interleaved, so a load change on the shared machine hits all of them alike), after a warm-up.
 * Returns the median µs of each, and the median over rounds of each one's ratio to fns[1].
 */
function usPer(fns: (() => unknown)[], n: number[], rounds = 9): { us: number[]; ratio: number[] } {
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  let sink = 0;
  const time = (fn: () => unknown, k: number) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < k; i++) sink ^= (fn() as { bins?: number } | null)?.bins ?? 1;
    return Number(process.hrtime.bigint() - t0) / 1000 / k;
  };
  fns.forEach((fn, i) => time(fn, n[i]!));
  const per: number[][] = fns.map(() => []);
  for (let r = 0; r < rounds; r++) fns.forEach((fn, i) => per[i]!.push(time(fn, n[i]!)));
  if (sink === 0x7fffffff) console.log(""); // keeps the results alive
  return { us: per.map(median), ratio: per.map((xs) => median(xs.map((x, r) => x / per[1]![r]!))) };
}

export function runSpectrumBench(n = 20_000): void {
  const db = spectrumValues();
  const { json, attachment } = spectrumFrames(db);
  const unaligned = (() => {
    const ab = new ArrayBuffer(attachment.length + 1);
    const b = Buffer.from(ab, 1, attachment.length);
    attachment.copy(b);
    return b;
  })();
  const reader = () => new FrameReader({ preface: false, attachments: true, maxFrame: 1 << 20 });
  const rj = reader();
  const ra = reader();
  const ru = reader();
  const jsonText = json.subarray(HEADER_LEN).toString("utf8");
  const jl = attachment.readUInt16BE(6);
  // Sanity: both forms decode to the same values.
  const a = decodeSpectrum(reader().push(attachment)[0]!);
  const j = decodeSpectrum(reader().push(json)[0]!);
  if (a.db.some((v, i) => v !== j.db[i])) throw new Error("the two encodings disagree");

  const m = usPer(
    [
      () => decodeSpectrum(rj.push(json)[0]!),
      () => decodeSpectrum(ra.push(attachment)[0]!),
      () => decodeSpectrum(ru.push(unaligned)[0]!),
      () => JSON.parse(jsonText),
      () => new Float32Array(attachment.buffer, attachment.byteOffset + HEADER_LEN + jl, BINS),
    ],
    [n / 8, n, n, n / 8, n * 4],
  );
  const [tJson, tAtt, tUnal, tParse, tView] = m.us as [number, number, number, number, number];
  const parseVsView = m.ratio[3]! / m.ratio[4]!;
  const f = (x: number) => x.toFixed(2);
  console.log(`spectrum frame, ${BINS} bins, on the wire: JSON ${json.length} B, attachment ${attachment.length} B (${(json.length / attachment.length).toFixed(2)}× smaller; target ≤ 4.2 KiB = 4 300 B)`);
  console.log(`decode to a SpectrumFrame (FrameReader + decodeSpectrum): JSON ${f(tJson)} µs, attachment ${f(tAtt)} µs → ${m.ratio[0]!.toFixed(1)}× (median of per-round ratios; target ≥ 10×); unaligned attachment (one copy) ${f(tUnal)} µs (${m.ratio[2]!.toFixed(2)}× the aligned one)`);
  console.log(`floors: JSON.parse of the JSON payload alone ${f(tParse)} µs vs a Float32Array view alone ${f(tView)} µs → ${parseVsView.toFixed(0)}×`);
  console.log(`reader stats: aligned ${JSON.stringify(ra.stats)}, unaligned ${JSON.stringify(ru.stats)}`);
}

if (require.main === module) runSpectrumBench();
