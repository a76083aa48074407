// The wire format of framing.md and envelope.md: preface, 8-byte header, one JSON envelope.
// Nothing here touches a socket; the client feeds it bytes.
import { isUtf8 } from "node:buffer";
import { COMMAND_FIELDS, type CommandName } from "./generated";
import { ProtocolError } from "./errors";

/** The 8 bytes each side sends first (framing.md §2). */
export const PREFACE: Buffer = Buffer.from([0x89, 0x4c, 0x50, 0x48, 0x0d, 0x0a, 0x1a, 0x0a]);
/** Header length: u32 BE length, encoding, flags, u16 reserved. */
export const HEADER_LEN = 8;
/** Encoding byte of JSON payloads. */
export const ENCODING_JSON = 0x01;
/** The engine never sends a larger payload (framing.md §4); the reader's default limit. */
export const ENGINE_MAX_PAYLOAD = 65_536;
/** The largest payload a client may send before `welcome` (framing.md §4). */
export const PRE_WELCOME_MAX_PAYLOAD = 4_096;

/** One decoded envelope as the engine sends it. */
export interface Envelope {
  type: string;
  name: string;
  id?: number;
  ref?: number;
  body: Record<string, unknown>;
  [extra: string]: unknown;
}

export interface FrameReaderOptions {
  /** Largest payload accepted, bytes. Default {@link ENGINE_MAX_PAYLOAD}. */
  maxFrame?: number;
  /** Whether the stream starts with the preface. Default true. */
  preface?: boolean;
}

/**
 * Cuts the engine's byte stream into envelopes. Accepts any chunking: bytes are kept as the
 * chunks they came in and joined once per frame (so a frame in N chunks costs O(size), not
 * O(N·size)). Throws {@link ProtocolError} at the first fault; after that every push throws
 * the same error (the connection must be closed). Allocates: one Buffer per frame that spans
 * chunks, the decoded string and the parsed object.
 */
export class FrameReader {
  private readonly maxFrame: number;
  private prefaceAt: number; // bytes of the preface checked so far; 8 = done
  private parts: Buffer[] = [];
  private have = 0;
  private payloadLen = -1; // -1: waiting for a header
  private failed: ProtocolError | null = null;

  constructor(opts: FrameReaderOptions = {}) {
    this.maxFrame = opts.maxFrame ?? ENGINE_MAX_PAYLOAD;
    this.prefaceAt = opts.preface === false ? PREFACE.length : 0;
  }

  /** Bytes received but not yet part of a complete frame. */
  get buffered(): number {
    return this.have;
  }

  /** Feeds bytes; returns every envelope completed by them, in order. */
  push(chunk: Uint8Array): Envelope[] {
    if (this.failed) throw this.failed;
    try {
      return this.pushInner(chunk);
    } catch (e) {
      this.failed = e instanceof ProtocolError ? e : new ProtocolError("invalid_envelope", String(e));
      this.parts = [];
      this.have = 0;
      throw this.failed;
    }
  }

  private pushInner(chunk: Uint8Array): Envelope[] {
    let buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    while (this.prefaceAt < PREFACE.length && buf.length > 0) {
      if (buf[0] !== PREFACE[this.prefaceAt]) {
        throw new ProtocolError("bad_preface", `byte ${this.prefaceAt} of the preface is 0x${buf[0]!.toString(16).padStart(2, "0")}, expected 0x${PREFACE[this.prefaceAt]!.toString(16)}: not a Loophole engine`);
      }
      this.prefaceAt++;
      buf = buf.subarray(1);
    }
    if (buf.length === 0) return [];
    this.parts.push(buf);
    this.have += buf.length;
    const out: Envelope[] = [];
    for (;;) {
      if (this.payloadLen < 0) {
        if (this.have < HEADER_LEN) break;
        const head = this.take(HEADER_LEN);
        this.payloadLen = this.checkHeader(head);
      }
      if (this.have < this.payloadLen) break;
      const payload = this.take(this.payloadLen);
      this.payloadLen = -1;
      out.push(this.decode(payload));
    }
    return out;
  }

  /** Removes n bytes from the front (joins chunks only when the bytes span several). */
  private take(n: number): Buffer {
    const first = this.parts[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.parts.shift();
      else this.parts[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const p = this.parts[0]!;
        const k = Math.min(p.length, n - at);
        p.copy(out, at, 0, k);
        at += k;
        if (k === p.length) this.parts.shift();
        else this.parts[0] = p.subarray(k);
      }
    }
    this.have -= n;
    return out;
  }

  /** errors.md §2 order: length, flags/reserved, encoding, empty. */
  private checkHeader(h: Buffer): number {
    const len = h.readUInt32BE(0);
    if (len > this.maxFrame) throw new ProtocolError("frame_too_large", `frame of ${len} bytes announced, limit ${this.maxFrame}`);
    if (h[5] !== 0 || h.readUInt16BE(6) !== 0) throw new ProtocolError("bad_header", `flags 0x${h[5]!.toString(16)}, reserved 0x${h.readUInt16BE(6).toString(16)}: must be 0`);
    if (h[4] !== ENCODING_JSON) throw new ProtocolError("unsupported_encoding", `encoding 0x${h[4]!.toString(16)}`);
    if (len === 0) throw new ProtocolError("invalid_json", "empty payload");
    return len;
  }

  private decode(payload: Buffer): Envelope {
    // buffer.isUtf8 validates natively; toString then cannot substitute U+FFFD.
    if (!isUtf8(payload)) throw new ProtocolError("invalid_utf8", "payload is not valid UTF-8");
    const text = payload.toString("utf8");
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (e) {
      throw new ProtocolError("invalid_json", (e as Error).message);
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ProtocolError("invalid_envelope", "payload is not a JSON object");
    const env = v as Record<string, unknown>;
    if (typeof env.type !== "string" || typeof env.name !== "string") throw new ProtocolError("invalid_envelope", "type and name must be strings");
    if (typeof env.body !== "object" || env.body === null || Array.isArray(env.body)) throw new ProtocolError("invalid_envelope", "body must be an object");
    if (env.ref !== undefined && !isU32(env.ref)) throw new ProtocolError("invalid_envelope", "ref must be a u32");
    return env as Envelope;
  }
}

export function isU32(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff;
}

/** Why a command could not be encoded. */
export class EncodeError extends Error {
  override readonly name = "EncodeError";
}

function encodeValue(v: unknown, float: boolean, field: string): string {
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new EncodeError(`${field} is ${v}: JSON has no NaN or infinity`);
    // A canonical encoder writes whole floats as `120.0` (vectors/README.md); integers as they are.
    if (float && Number.isInteger(v) && Math.abs(v) < 1e21) return Object.is(v, -0) ? "-0.0" : `${v}.0`;
    return String(v);
  }
  const s = JSON.stringify(v);
  if (s === undefined) throw new EncodeError(`${field} cannot be written as JSON`);
  return s;
}

/** The JSON text of a command envelope, in canonical key order (vectors/README.md). */
export function commandJson(name: string, id: number, body: Readonly<Record<string, unknown>>): string {
  if (!isU32(id)) throw new EncodeError(`id ${id} is not a u32`);
  const spec = (COMMAND_FIELDS as Record<string, { order: readonly string[]; floats: readonly string[] } | undefined>)[name];
  let fields = "";
  const emit = (k: string) => {
    const v = body[k];
    if (v === undefined) return;
    fields += `${fields ? "," : ""}${JSON.stringify(k)}:${encodeValue(v, spec?.floats.includes(k) ?? false, k)}`;
  };
  if (spec) for (const k of spec.order) emit(k);
  for (const k of Object.keys(body)) if (!spec || !spec.order.includes(k)) emit(k);
  return `{"type":"command","name":${JSON.stringify(name)},"id":${id},"body":{${fields}}}`;
}

/** One frame: header + payload. Measures bytes (`Buffer.byteLength`), never characters. */
export function encodeFrame(json: string, maxPayload = Infinity): Buffer {
  const len = Buffer.byteLength(json, "utf8");
  if (len > maxPayload) throw new EncodeError(`frame of ${len} bytes exceeds the limit of ${maxPayload}`);
  const out = Buffer.allocUnsafe(HEADER_LEN + len);
  out.writeUInt32BE(len, 0);
  out[4] = ENCODING_JSON;
  out[5] = 0;
  out.writeUInt16BE(0, 6);
  out.write(json, HEADER_LEN, "utf8");
  return out;
}

/** Encodes one command frame (see {@link commandJson} and {@link encodeFrame}). */
export function encodeCommand<N extends CommandName>(name: N | string, id: number, body: Readonly<Record<string, unknown>>, maxPayload = Infinity): Buffer {
  return encodeFrame(commandJson(name, id, body), maxPayload);
}
