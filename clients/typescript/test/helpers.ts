// Shared by the tests: fail on any unhandled rejection, find the repository, load the vectors.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

process.on("unhandledRejection", (reason) => {
  // A promise the client created and nobody handled: exactly what the package promises never
  // to produce. Crash the test process so node:test reports the file as failed.
  process.exitCode = 1;
  console.error("unhandledRejection:", reason);
  throw reason;
});

export function repoRoot(): string {
  let d = resolve(__dirname);
  while (!existsSync(join(d, "docs", "specs", "ipc", "vectors", "vectors.json"))) {
    const up = dirname(d);
    if (up === d) throw new Error("cannot find docs/specs/ipc from " + __dirname);
    d = up;
  }
  return d;
}

export interface Vector {
  name: string;
  description: string;
  kind: "frame" | "stream" | "negative";
  direction: "client_to_engine" | "engine_to_client";
  hex: string;
  json: any;
  canonical?: boolean;
  same_as?: string;
  preface?: boolean;
  layer?: string;
  state?: "connected" | "awaiting_hello" | "established";
  error?: string | null;
  ref?: number | null;
  closes?: boolean;
  partial?: boolean;
  max_frame?: number;
  frame_limit?: number;
  /** Frames with an attachment: its f32 values, in order. */
  attachment?: number[];
  /** Frames with an attachment: the JSON-array vector with the same values. */
  same_values_as?: string;
  /** The engine's welcome.taps a negative vector assumes. */
  taps?: number;
}

export function vectors(): Vector[] {
  return JSON.parse(readFileSync(join(repoRoot(), "docs", "specs", "ipc", "vectors", "vectors.json"), "utf8")) as Vector[];
}

/** The signal example binary built by `cargo build --release --example signal`, or null. */
export function signalBinary(): string | null {
  const env = process.env.LOOPHOLE_SIGNAL_BIN;
  if (env) return env;
  const ext = process.platform === "win32" ? ".exe" : "";
  const p = join(repoRoot(), "target", "release", "examples", "signal" + ext);
  return existsSync(p) ? p : null;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface AttachmentFrameOptions {
  /** Header flags byte. Default 0x01 (ATTACHMENT). */
  flags?: number;
  /** Header bytes 6..7. Default the padded JSON length. */
  jsonLen?: number;
  /** The envelope's `attachment` member; null = leave it out. Default {format:"f32le", bytes}. */
  member?: Record<string, unknown> | null;
  /** Padding to a multiple of this many bytes. Default 8 (framing.md). */
  padTo?: number;
  /** Raw attachment bytes instead of `data` (e.g. a length that is not a multiple of 4). */
  raw?: Buffer;
}

/**
 * A frame with an attachment, built from the wire design (framing.md §3): JSON padded with spaces
 * to a multiple of 8, `json_len` in header bytes 6..7, then the f32 values little-endian.
 */
export function attachmentFrame(env: Record<string, unknown>, data: Float32Array, o: AttachmentFrameOptions = {}): Buffer {
  const att = o.raw ?? Buffer.from(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  if (!o.raw && new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    for (let i = 0; i < data.length; i++) att.writeFloatLE(data[i]!, i * 4);
  }
  const member = o.member === undefined ? { format: "f32le", bytes: att.length } : o.member;
  let json = JSON.stringify(member === null ? env : { ...env, attachment: member });
  const pad = o.padTo ?? 8;
  while (Buffer.byteLength(json) % pad !== 0) json += " ";
  const jb = Buffer.from(json);
  const head = Buffer.alloc(8);
  head.writeUInt32BE(jb.length + att.length, 0);
  head[4] = 0x01;
  head[5] = o.flags ?? 0x01;
  head.writeUInt16BE(o.jsonLen ?? jb.length, 6);
  return Buffer.concat([head, jb, att]);
}

/** A buffer whose bytes start at `offset` within their ArrayBuffer (to place a frame at a chosen alignment). */
export function atOffset(bytes: Buffer, offset: number): Buffer {
  const ab = new ArrayBuffer(bytes.length + offset);
  const out = Buffer.from(ab, offset, bytes.length);
  bytes.copy(out);
  return out;
}
