// The wire format of framing.md and envelope.md: preface, 8-byte header, one JSON envelope.
// Nothing here touches a socket; the client feeds it bytes.
import { isUtf8 } from "node:buffer";
import { COMMAND_FIELDS, type CommandName } from "./generated";
import { ProtocolError } from "./errors";

/** The 8 bytes each side sends first (framing.md §2). */
export const PREFACE: Buffer = Buffer.from([0x89, 0x4c, 0x50, 0x48, 0x0d, 0x0a, 0x1a, 0x0a]);
/** Header length: u32 BE length, encoding, flags, u16 reserved (or `json_len` with an attachment). */
export const HEADER_LEN = 8;
/** Header `flags` bit 0: the payload is `json_len` bytes of JSON (space-padded to a multiple of 8), then raw f32le. Engine → client only, and only when the client asked in `hello`. */
export const FLAG_ATTACHMENT = 0x01;
/** `json_len` is a multiple of this, so the attachment starts 8-aligned in the frame. */
export const ATTACHMENT_ALIGN = 8;
/** Where the reader puts a frame's attachment on its envelope (a symbol: never clashes with a wire member, invisible to JSON.stringify and deepEqual). Read it with {@link attachmentOf}. */
export const ATTACHMENT_DATA: unique symbol = Symbol("loophole.attachment");
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** Encoding byte of JSON payloads. */
export const ENCODING_JSON = 0x01;
/** The engine never sends a larger payload (framing.md §4); the reader's default limit. */
export const ENGINE_MAX_PAYLOAD = 65_536;
/** The largest payload a client may send before `welcome` (framing.md §4). */
export const PRE_WELCOME_MAX_PAYLOAD = 4_096;
/** The range of `welcome.max_frame`: what an engine may be configured with (framing.md §4). */
export const MIN_MAX_FRAME = 64;
/** See {@link MIN_MAX_FRAME}. */
export const MAX_MAX_FRAME = 16_777_216;

/** One decoded envelope as the engine sends it. */
export interface Envelope {
  type: string;
  name: string;
  id?: number;
  ref?: number;
  body: Record<string, unknown>;
  /** Present exactly when the frame had the ATTACHMENT flag: what the engine says it attached. */
  attachment?: { format: "f32le"; bytes: number };
  /** The attachment's f32 values (see {@link attachmentOf}). */
  readonly [ATTACHMENT_DATA]?: Float32Array;
  [extra: string]: unknown;
}

/** The attachment of an envelope the reader produced, or null when its frame had none. */
export function attachmentOf(env: Envelope): Float32Array | null {
  return env[ATTACHMENT_DATA] ?? null;
}

/**
 * How the reader produced attachments so far. `views`: a Float32Array over the received bytes,
 * no copy (the frame arrived in one chunk at a 4-aligned address, or was joined from several
 * chunks into a fresh buffer, where it is always aligned: `joined` counts those). `copies`: the
 * attachment bytes were copied once into an aligned Float32Array (one chunk, unaligned address;
 * or a big-endian host, where the bytes are swapped while copying).
 */
export interface AttachmentStats {
  views: number;
  copies: number;
  joined: number;
}

export interface FrameReaderOptions {
  /** Largest payload accepted, bytes. Default {@link ENGINE_MAX_PAYLOAD}. */
  maxFrame?: number;
  /** Whether the stream starts with the preface. Default true. */
  preface?: boolean;
  /**
   * Accept frames with the ATTACHMENT flag (the client asked for them in `hello`). Default false:
   * any flag bit is `bad_header`, as for a client that did not ask.
   */
  attachments?: boolean;
}

/**
 * Cuts the engine's byte stream into envelopes. Accepts any chunking: bytes are kept as the
 * chunks they came in and joined once per frame (so a frame in N chunks costs O(size), not
 * O(N·size)). Throws {@link ProtocolError} at the first fault; after that every push throws
 * the same error (the connection must be closed). Allocates: one Buffer per frame that spans
 * chunks, the decoded string and the parsed object; for an attachment, a Float32Array header
 * over the received bytes, or (unaligned, see {@link AttachmentStats}) one copy of them.
 * A view keeps its chunk's memory alive as long as the caller holds it.
 */
export class FrameReader {
  private readonly maxFrame: number;
  private prefaceAt: number; // bytes of the preface checked so far; 8 = done
  private parts: Buffer[] = [];
  private have = 0;
  private payloadLen = -1; // -1: waiting for a header
  private jsonLen = -1; // -1: the frame has no attachment
  private failed: ProtocolError | null = null;
  private readonly attachments: boolean;
  /** Whether frames with the ATTACHMENT flag are accepted (the option). */
  get acceptsAttachments(): boolean {
    return this.attachments;
  }
  /** How attachments were produced (views vs copies); see {@link AttachmentStats}. */
  readonly stats: AttachmentStats = { views: 0, copies: 0, joined: 0 };

  constructor(opts: FrameReaderOptions = {}) {
    this.maxFrame = opts.maxFrame ?? ENGINE_MAX_PAYLOAD;
    this.prefaceAt = opts.preface === false ? PREFACE.length : 0;
    this.attachments = opts.attachments ?? false;
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
      const jsonLen = this.jsonLen;
      this.payloadLen = this.jsonLen = -1;
      out.push(this.decode(payload, jsonLen));
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
      // Not pooled: the joined frame starts at offset 0 of its own memory, so an attachment
      // (at json_len, a multiple of 8) is aligned and viewed without a second copy.
      out = this.jsonLen >= 0 ? Buffer.allocUnsafeSlow(n) : Buffer.allocUnsafe(n);
      if (this.jsonLen >= 0) this.stats.joined++;
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

  /** errors.md §2 order: length, flags/reserved (json_len), encoding, empty. Sets `jsonLen`. */
  private checkHeader(h: Buffer): number {
    const len = h.readUInt32BE(0);
    if (len > this.maxFrame) throw new ProtocolError("frame_too_large", `frame of ${len} bytes announced, limit ${this.maxFrame}`);
    const flags = h[5]!;
    const rsv = h.readUInt16BE(6);
    if (flags === FLAG_ATTACHMENT && this.attachments) this.jsonLen = checkJsonLen(len, rsv);
    else if (flags !== 0 || rsv !== 0) {
      const why = flags === FLAG_ATTACHMENT ? "ATTACHMENT flag, but this client did not ask for attachments" : "must be 0";
      throw new ProtocolError("bad_header", `flags 0x${flags.toString(16)}, reserved 0x${rsv.toString(16)}: ${why}`);
    }
    if (h[4] !== ENCODING_JSON) throw new ProtocolError("unsupported_encoding", `encoding 0x${h[4]!.toString(16)}`);
    if (len === 0) throw new ProtocolError("invalid_json", "empty payload");
    return len;
  }

  private decode(payload: Buffer, jsonLen: number): Envelope {
    const json = jsonLen >= 0 ? payload.subarray(0, jsonLen) : payload;
    const env = parseEnvelope(json);
    if (jsonLen < 0) {
      if (env.attachment !== undefined) throw new ProtocolError("bad_attachment", "envelope has an `attachment` member but the frame has no ATTACHMENT flag");
      return env;
    }
    const bytes = payload.length - jsonLen;
    const a = env.attachment as unknown;
    if (typeof a !== "object" || a === null || Array.isArray(a)) throw new ProtocolError("bad_attachment", "ATTACHMENT flag set but the envelope has no `attachment` object");
    const { format, bytes: said } = a as Record<string, unknown>;
    if (format !== "f32le") throw new ProtocolError("bad_attachment", `attachment format ${JSON.stringify(format)}, expected "f32le"`);
    if (said !== bytes) throw new ProtocolError("bad_attachment", `attachment.bytes is ${JSON.stringify(said)} but the frame carries ${bytes} bytes after json_len ${jsonLen}`);
    Object.defineProperty(env, ATTACHMENT_DATA, { value: this.f32(payload, jsonLen), enumerable: false });
    return env;
  }

  /** payload[at..] as f32le: a view when aligned on a little-endian host, else one copy. */
  private f32(payload: Buffer, at: number): Float32Array {
    const off = payload.byteOffset + at;
    const n = (payload.length - at) / 4;
    if (LITTLE_ENDIAN && off % 4 === 0) {
      this.stats.views++;
      return new Float32Array(payload.buffer, off, n);
    }
    this.stats.copies++;
    const out = new Float32Array(n);
    if (LITTLE_ENDIAN) new Uint8Array(out.buffer).set(payload.subarray(at));
    else {
      const dv = new DataView(payload.buffer, off, n * 4);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
    }
    return out;
  }
}

/** The header's `json_len` (bytes 6..7 with the ATTACHMENT flag), checked against framing.md §3. */
function checkJsonLen(len: number, jsonLen: number): number {
  if (jsonLen < ATTACHMENT_ALIGN || jsonLen > len) throw new ProtocolError("bad_header", `json_len ${jsonLen} outside ${ATTACHMENT_ALIGN} … length ${len}`);
  if (jsonLen % ATTACHMENT_ALIGN !== 0) throw new ProtocolError("bad_header", `json_len ${jsonLen} is not a multiple of ${ATTACHMENT_ALIGN}`);
  if ((len - jsonLen) % 4 !== 0) throw new ProtocolError("bad_header", `attachment of ${len - jsonLen} bytes is not a whole number of f32`);
  return jsonLen;
}

/** One JSON envelope from its UTF-8 bytes, with the protocol's checks. */
function parseEnvelope(payload: Buffer): Envelope {
  // buffer.isUtf8 validates natively; toString then cannot substitute U+FFFD.
  if (!isUtf8(payload)) throw new ProtocolError("invalid_utf8", "payload is not valid UTF-8");
  const text = payload.toString("utf8");
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new ProtocolError("invalid_json", (e as Error).message);
  }
  checkProtocolJson(text, v);
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ProtocolError("invalid_envelope", "payload is not a JSON object");
  const env = v as Record<string, unknown>;
  if (typeof env.type !== "string" || typeof env.name !== "string") throw new ProtocolError("invalid_envelope", "type and name must be strings");
  if (typeof env.body !== "object" || env.body === null || Array.isArray(env.body)) throw new ProtocolError("invalid_envelope", "body must be an object");
  if (env.ref !== undefined && !isU32(env.ref)) throw new ProtocolError("invalid_envelope", "ref must be a u32");
  return env as Envelope;
}

/** Nesting allowed inside the envelope object (errors.md: deeper is `invalid_json`). */
export const MAX_JSON_DEPTH = 64;

/**
 * The protocol's two JSON rules beyond RFC 8259 that `JSON.parse` does not apply (errors.md):
 * no `\u` escape of a surrogate (alone or paired; characters outside the BMP travel as UTF-8),
 * and at most {@link MAX_JSON_DEPTH} levels of arrays/objects inside the envelope object.
 * Both are `invalid_json`. Cost: one `indexOf` unless the text has a `\u` escape, and one walk
 * of the parsed value that stops at scalars (flat arrays such as meters cost one step a value).
 */
function checkProtocolJson(text: string, v: unknown): void {
  if (hasSurrogateEscape(text)) {
    throw new ProtocolError("invalid_json", "a \\u escape of a surrogate is not allowed");
  }
  if (tooDeep(v, MAX_JSON_DEPTH + 1)) throw new ProtocolError("invalid_json", `nesting deeper than ${MAX_JSON_DEPTH} levels inside the envelope`);
}

/** A `\u` escape of a surrogate (U+D800–U+DFFF) in JSON text: `invalid_json` in this protocol. */
const SURROGATE_ESCAPE = /(^|[^\\])(\\\\)*\\u[dD][89a-fA-F][0-9a-fA-F]{2}/;
const hasSurrogateEscape = (text: string): boolean => text.includes("\\u") && SURROGATE_ESCAPE.test(text);

function tooDeep(v: unknown, budget: number): boolean {
  if (typeof v !== "object" || v === null) return false;
  if (budget === 0) return true;
  const items = Array.isArray(v) ? v : Object.values(v);
  for (const x of items) if (typeof x === "object" && x !== null && tooDeep(x, budget - 1)) return true;
  return false;
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

/**
 * The JSON text of a command envelope, in canonical key order (vectors/README.md). Throws
 * {@link EncodeError} for what the engine could not read: a non-u32 id, NaN/infinity, a string
 * with a lone surrogate (JSON.stringify writes it as a `\u` escape, which the protocol forbids:
 * the engine would answer `invalid_json` without `ref`, so the command would never be answered).
 */
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
  const text = `{"type":"command","name":${JSON.stringify(name)},"id":${id},"body":{${fields}}}`;
  if (hasSurrogateEscape(text)) throw new EncodeError("a string holds a lone surrogate (U+D800–U+DFFF): it has no UTF-8 form and the protocol forbids its \\u escape");
  return text;
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
