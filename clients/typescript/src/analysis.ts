// Analysis telemetry (envelope.md: `scope` and `spectrum`): one type per stream, whichever
// encoding arrived. With an attachment the arrays are Float32Array views of the frame (no copy,
// no parse); as JSON arrays they are converted once into a Float32Array (f32, as the engine
// computed them). Pure functions: no socket, no state. Run on the event loop like the reader.
import { attachmentOf, type Envelope } from "./codec";
import { ProtocolError } from "./errors";

/** The streams that take a tap and carry bulk float data. */
export const ANALYSIS_STREAMS = ["scope", "spectrum"] as const;
export type AnalysisStream = (typeof ANALYSIS_STREAMS)[number];
export const isAnalysisStream = (s: string): s is AnalysisStream => s === "scope" || s === "spectrum";

/** Limits of `telemetry.subscribe` for the analysis streams (envelope.md); the engine enforces them (`out_of_range`). */
export const SCOPE_POINTS = { min: 16, max: 1024 } as const;
export const SPECTRUM_BINS = { min: 16, max: 4096 } as const; // and a power of two
export const ANALYSIS_RATE_HZ = { min: 1, max: 60 } as const;
/** Analysis subscriptions one session may hold (keys (stream, tap)). */
export const MAX_ANALYSIS_SUBSCRIPTIONS = 8;

/** `subscribe("scope", …)`: the most recent window of tap `tap`, decimated to `points` min/max pairs. */
export interface ScopeParams {
  /** 0 ≤ tap < welcome.taps. */
  tap: number;
  /** 16 … 1024. */
  points: number;
  /** Frames per second, 1 … 60. */
  rateHz: number;
}

/** `subscribe("spectrum", …)`: `bins` dB magnitudes of a Hann-windowed FFT of tap `tap`. */
export interface SpectrumParams {
  /** 0 ≤ tap < welcome.taps. */
  tap: number;
  /** A power of two, 16 … 4096. */
  bins: number;
  /** Frames per second, 1 … 60. */
  rateHz: number;
}

/** One `scope` frame. `min[i]`/`max[i]`: the extremes of the `samplesPerPoint` samples of point i (peaks survive decimation). */
export interface ScopeFrame {
  tap: number;
  points: number;
  samplesPerPoint: number;
  /** Engine sample clock of the window's last sample. */
  sample: number;
  /** Samples the engine's reader lost since the previous frame. */
  missed: number;
  min: Float32Array;
  max: Float32Array;
}

/** One `spectrum` frame (Hann window, always). Bin k (linear spacing) is centred at k · hzPerBin; dBFS, a full-scale sine reads 0 dB, floor −160 dB. */
export interface SpectrumFrame {
  tap: number;
  bins: number;
  sampleRate: number;
  /** sampleRate / (2 · bins): computed by the client (the wire does not carry it). */
  hzPerBin: number;
  sample: number;
  missed: number;
  db: Float32Array;
}

function int(b: Record<string, unknown>, k: string, stream: string): number {
  const v = b[k];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw new ProtocolError("invalid_envelope", `${stream}.${k} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return v;
}

/** A JSON array of numbers into a Float32Array, checked in the same pass. */
function floats(b: Record<string, unknown>, k: string, n: number, stream: string): Float32Array {
  const v = b[k];
  if (!Array.isArray(v) || v.length !== n) throw new ProtocolError("invalid_envelope", `${stream}.${k} must be an array of ${n} numbers`);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const x = v[i];
    if (typeof x !== "number") throw new ProtocolError("invalid_envelope", `${stream}.${k}[${i}] is not a number`);
    out[i] = x;
  }
  return out;
}

/** The attachment, checked to hold `n` f32 values, with the JSON arrays it replaces absent. */
function attached(env: Envelope, n: number, replaces: readonly string[]): Float32Array | null {
  const data = attachmentOf(env);
  if (!data) return null;
  if (data.length !== n) throw new ProtocolError("bad_attachment", `${env.name} attachment holds ${data.length} f32, expected ${n}`);
  for (const k of replaces) if (env.body[k] !== undefined) throw new ProtocolError("bad_attachment", `${env.name} has both an attachment and a \`${k}\` array`);
  return data;
}

/** A `scope` telemetry envelope as a {@link ScopeFrame}. Throws {@link ProtocolError} when it breaks the spec. */
export function decodeScope(env: Envelope): ScopeFrame {
  const b = env.body;
  const points = int(b, "points", "scope");
  const data = attached(env, 2 * points, ["min", "max"]);
  return {
    tap: int(b, "tap", "scope"),
    points,
    samplesPerPoint: int(b, "samples_per_point", "scope"),
    sample: int(b, "sample", "scope"),
    missed: int(b, "missed", "scope"),
    min: data ? data.subarray(0, points) : floats(b, "min", points, "scope"),
    max: data ? data.subarray(points, 2 * points) : floats(b, "max", points, "scope"),
  };
}

/** A `spectrum` telemetry envelope as a {@link SpectrumFrame}. Throws {@link ProtocolError} when it breaks the spec. */
export function decodeSpectrum(env: Envelope): SpectrumFrame {
  const b = env.body;
  const bins = int(b, "bins", "spectrum");
  const data = attached(env, bins, ["db"]);
  const sampleRate = int(b, "sample_rate", "spectrum");
  return {
    tap: int(b, "tap", "spectrum"),
    bins,
    sampleRate,
    hzPerBin: bins > 0 ? sampleRate / (2 * bins) : 0,
    sample: int(b, "sample", "spectrum"),
    missed: int(b, "missed", "spectrum"),
    db: data ?? floats(b, "db", bins, "spectrum"),
  };
}
