import * as net from "node:net";

const PREFACE = Buffer.from([0x89, 0x4c, 0x50, 0x48, 0x0d, 0x0a, 0x1a, 0x0a]);
const HEADER_LEN = 8;
const MAX_INBOUND = 65536; // the engine never sends a larger payload

export interface Envelope {
  type: "command" | "reply" | "telemetry" | "error";
  name: string;
  id?: number;
  ref?: number;
  body: Record<string, any>;
}

export function encodeFrame(env: Envelope): Buffer {
  const payload = Buffer.from(JSON.stringify(env), "utf8");
  const header = Buffer.alloc(HEADER_LEN); // flags and reserved stay 0
  header.writeUInt32BE(payload.length, 0);
  header[4] = 0x01; // encoding: JSON
  return Buffer.concat([header, payload]);
}

/** Accumulates the engine's bytes; returns each complete envelope. Throws on a protocol error. */
export class FrameReader {
  private buf = Buffer.alloc(0);
  private prefaceSeen = false;
  private utf8 = new TextDecoder("utf-8", { fatal: true });

  push(chunk: Buffer): Envelope[] {
    this.buf = Buffer.concat([this.buf, chunk]);
    if (!this.prefaceSeen) {
      const n = Math.min(this.buf.length, PREFACE.length);
      if (!this.buf.subarray(0, n).equals(PREFACE.subarray(0, n))) throw new Error("not a Loophole engine");
      if (n < PREFACE.length) return [];
      this.buf = this.buf.subarray(PREFACE.length);
      this.prefaceSeen = true;
    }
    const out: Envelope[] = [];
    while (this.buf.length >= HEADER_LEN) {
      const len = this.buf.readUInt32BE(0);
      if (len > MAX_INBOUND || this.buf[4] !== 0x01 || this.buf[5] !== 0 || this.buf.readUInt16BE(6) !== 0) {
        throw new Error("bad frame header");
      }
      if (this.buf.length < HEADER_LEN + len) break; // the rest has not arrived yet
      const payload = this.buf.subarray(HEADER_LEN, HEADER_LEN + len);
      this.buf = this.buf.subarray(HEADER_LEN + len);
      out.push(JSON.parse(this.utf8.decode(payload)) as Envelope);
    }
    return out;
  }
}

export class EngineError extends Error {
  constructor(readonly code: string, message: string) {
    super(`${code}: ${message}`);
  }
}

type Pending = { resolve: (env: Envelope) => void; reject: (err: Error) => void };

export class EngineClient {
  private sock: net.Socket | null = null;
  private reader = new FrameReader();
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private subscriptions = new Map<string, number>(); // stream → rate_hz, replayed per session
  private instance: string | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private lastHeard = 0;
  private backoffMs = 100;
  private stopped = false;

  constructor(
    private port: number,
    private onTelemetry: (env: Envelope) => void,
    private onEngineRestart: () => void, // a new engine process: push the project state again
  ) {}

  start(): void {
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.sock?.destroy();
  }

  /** Sends a command; resolves with its reply, rejects with its error (matched by id/ref). */
  request(name: string, body: Record<string, unknown> = {}): Promise<Envelope> {
    const id = this.nextId;
    this.nextId = (this.nextId + 1) % 2 ** 32; // ids are u32
    return new Promise((resolve, reject) => {
      if (!this.sock) return reject(new Error("not connected"));
      this.pending.set(id, { resolve, reject });
      this.sock.write(encodeFrame({ type: "command", name, id, body }));
    });
  }

  async subscribe(stream: string, rate_hz: number): Promise<void> {
    this.subscriptions.set(stream, rate_hz);
    await this.request("telemetry.subscribe", { stream, rate_hz });
  }

  private connect(): void {
    this.reader = new FrameReader();
    const sock = net.createConnection({ host: "127.0.0.1", port: this.port });
    this.sock = sock;
    sock.setNoDelay(true); // small frames: do not let Nagle hold them back
    sock.on("connect", () => {
      this.lastHeard = Date.now();
      this.handshake().catch((err) => {
        // protocol_version and bad_token will not heal by retrying.
        if (err instanceof EngineError && ["protocol_version", "bad_token"].includes(err.code)) this.stopped = true;
        sock.destroy();
      });
    });
    sock.on("data", (chunk: Buffer) => {
      this.lastHeard = Date.now();
      try {
        for (const env of this.reader.push(chunk)) this.dispatch(env);
      } catch {
        sock.destroy(); // not our protocol: close, then reconnect with backoff
      }
    });
    sock.on("error", () => {}); // "close" follows
    sock.on("close", () => this.lost());
  }

  private async handshake(): Promise<void> {
    this.sock!.write(PREFACE); // the hello frame may follow in the same write
    const welcome = (await this.request("hello", { protocol: 1, client: "aura/0.1.0" })).body;
    this.backoffMs = 100;
    if (this.instance !== null && welcome.instance !== this.instance) this.onEngineRestart();
    this.instance = welcome.instance;
    const timeoutMs: number = welcome.timeout_ms;
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastHeard > timeoutMs) return void this.sock?.destroy(); // engine silent
      this.request("ping", { nonce: this.nextId }).catch(() => {});
    }, welcome.heartbeat_ms);
    for (const [stream, rate_hz] of this.subscriptions) {
      await this.request("telemetry.subscribe", { stream, rate_hz }); // subscriptions reset per session
    }
  }

  private dispatch(env: Envelope): void {
    const waiting = env.ref !== undefined ? this.pending.get(env.ref) : undefined;
    if (waiting && (env.type === "reply" || env.type === "error")) {
      this.pending.delete(env.ref!);
      if (env.type === "reply") waiting.resolve(env);
      else waiting.reject(new EngineError(String(env.body.code), String(env.body.message)));
    } else if (env.type === "telemetry") {
      this.onTelemetry(env);
    } else if (env.type === "error") {
      console.warn(`engine ${env.name}`, env.body); // goodbye, log, or an error without ref
    } // anything else: ignore, for forward compatibility
  }

  private lost(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
    this.sock = null;
    for (const p of this.pending.values()) p.reject(new Error("connection lost: outcome unknown"));
    this.pending.clear();
    if (this.stopped) return;
    const delay = this.backoffMs * (0.5 + Math.random()); // exponential backoff with jitter
    this.backoffMs = Math.min(this.backoffMs * 2, 5000);
    setTimeout(() => this.connect(), delay);
  }
}
