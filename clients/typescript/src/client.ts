// EngineClient: one logical connection to the engine, across reconnects (session.md).
//
// Threading: everything runs on the Node event loop; no method blocks. Allocation: one pending
// record and one Buffer per request; the reader allocates per frame (see codec.ts).
import { EventEmitter } from "node:events";
import * as net from "node:net";
import { FrameReader, PREFACE, PRE_WELCOME_MAX_PAYLOAD, ENGINE_MAX_PAYLOAD, MIN_MAX_FRAME, MAX_MAX_FRAME, encodeCommand, EncodeError, isU32, attachmentOf, type AttachmentStats, type Envelope } from "./codec";
import { decodeScope, decodeSpectrum, isAnalysisStream, type AnalysisStream, type ScopeFrame, type ScopeParams, type SpectrumFrame, type SpectrumParams } from "./analysis";
import { EngineError, ProtocolError, type ClientErrorCode } from "./errors";
import type { ErrorCode, CommandBodies, CommandName, ErrorBodies, ReplyBodies, ReplyOf, TelemetryBodies, TelemetryName, TelemetryStream } from "./generated";

/** The streams subscribed with a rate alone (meters, transport.state, engine.health). */
export type PlainStream = Exclude<TelemetryStream, AnalysisStream>;
/** Every stream `subscribe` takes (the schemas' list; the analysis ones named here as well until every schema has them). */
export type AnyStream = TelemetryStream | AnalysisStream;
/** Every telemetry name a listener can ask for. */
export type StreamName = TelemetryName | AnalysisStream;
/** What a listener of `S` receives: analysis frames normalised to Float32Array, other bodies as sent. */
export type TelemetryOf<S extends StreamName> = S extends "scope" ? ScopeFrame : S extends "spectrum" ? SpectrumFrame : S extends TelemetryName ? TelemetryBodies[S] : never;

/**
 * Connection state. Engine health (telemetry `engine.health`) is kept apart: see {@link EngineClient.health}.
 * A new client is `closed` until {@link EngineClient.start} (before `start()`, `closed` means "not
 * started yet"; after it, `closed` and `failed` are final: make a new client to try again).
 */
export type ClientState = "connecting" | "handshaking" | "ready" | "reconnecting" | "closed" | "failed";

/** Where to connect; a function is asked again before every attempt (a restarted engine has a new port). */
export type Endpoint = { host?: string; port: number };
export type EndpointSource = Endpoint | (() => Endpoint | Promise<Endpoint>);

export interface ReconnectOptions {
  /** First backoff ceiling, ms. Default 50. */
  initialMs?: number;
  /** Largest backoff ceiling, ms. Default 5 000. */
  maxMs?: number;
  /** Growth per failed attempt. Default 2. */
  factor?: number;
  /**
   * Attempts without a session before the client gives up (`failed`). Default Infinity: after a
   * lost session the client retries for ever. Before the first session
   * {@link ClientOptions.startTimeoutMs} bounds the attempts too.
   */
  maxAttempts?: number;
}

export interface ClientOptions {
  /** Session token (ports.md §5). */
  token?: string;
  /** `hello.client`, ≤ 64 bytes. Default `"@loophole/ipc/0.1.0"`. */
  clientName?: string;
  /** Default per-request timeout, ms. Default 5 000. */
  requestTimeoutMs?: number;
  /** Preface + hello → welcome deadline, ms (connect included). Default 5 000. */
  handshakeTimeoutMs?: number;
  /** Unanswered commands allowed at once (session.md §5). Default 256. */
  maxInFlight?: number;
  /** Over {@link maxInFlight} (or while the socket buffer is full): wait for room, or reject `not_sent`. Default `"wait"`. */
  onFull?: "wait" | "reject";
  /** Requests allowed to wait for room; beyond it they reject `not_sent`. Default 65 536. */
  maxWaiting?: number;
  /**
   * Requests made while not ready: 0 (default) rejects them at once with `not_sent`; N > 0 keeps
   * up to N of them and sends them when the next session is ready (they were never sent, so this
   * is not a replay). They still time out.
   */
  queueWhileDisconnected?: number;
  /** Reconnect policy, or false to end in `failed` at the first loss (and after the first failed attempt to start). */
  reconnect?: ReconnectOptions | false;
  /**
   * How long {@link EngineClient.start} retries (with the `reconnect` backoff) when no session
   * can be opened — nothing listening, a connection closed before the welcome, `session_busy`,
   * an endpoint function that throws (a connection file not written yet) — before it rejects
   * with the last attempt's cause and the client ends `failed`, ms. Default 3 000 (ports.md §7:
   * an engine may be restarting). No attempt begins after it; the one under way is bounded by
   * {@link handshakeTimeoutMs}. 0: one attempt. Infinity: wait for the engine (close() ends the
   * wait). Refusals no retry can heal (`bad_token`, `protocol_version`…) reject at once. Once a
   * session was ready, losses follow `reconnect` alone.
   */
  startTimeoutMs?: number;
  /** Send heartbeats and watch pongs. Default true. */
  heartbeat?: boolean;
  /** Random source in [0, 1) for backoff jitter (tests). Default Math.random. */
  random?: () => number;
  /**
   * Ask for binary attachments in `hello` (analysis arrays as raw f32 after the JSON). Default
   * true. False: the engine sends JSON arrays; the events carry the same Float32Array types.
   * An engine older than attachments refuses the field (`invalid_field`, the connection stays in
   * handshake): the client then sends its hello again without it, and asks no more on that
   * connection. Each new connection asks again (one extra round trip to an old engine), so an
   * engine restarted or upgraded meanwhile gets the field.
   */
  attachments?: boolean;
}

export interface RequestOptions {
  signal?: AbortSignal;
  /** Overrides the client's default timeout; 0 = none. */
  timeoutMs?: number;
}

/** Full-jitter exponential backoff: a uniform delay in [0, min(max, initial·factor^attempt)). */
export function backoffDelay(attempt: number, opts: ReconnectOptions = {}, random: () => number = Math.random): number {
  const initial = opts.initialMs ?? 50;
  const max = opts.maxMs ?? 5_000;
  const ceiling = Math.min(max, initial * Math.pow(opts.factor ?? 2, attempt));
  return Math.floor(random() * ceiling);
}

/** The second argument of the `disconnected` event. */
export interface DisconnectInfo {
  /** Whether this attempt's TCP connection was made (false: refused, unreachable, no endpoint). */
  connected: boolean;
  /** Whether a session was ready on it (false: it ended in or before the handshake). */
  session: boolean;
  /** The underlying error when there is one: the socket's (`code` ECONNREFUSED, `address`, `port`), the endpoint function's, a `ProtocolError`, the engine's `EngineError`. */
  cause?: unknown;
}

/** Why a client ended `failed` (the fields of the EngineError start() rejects with). */
interface Failure {
  code: ErrorCode | ClientErrorCode;
  message: string;
  fromEngine: boolean;
  cause: unknown;
}

interface Pending {
  id: number;
  name: string;
  frameBody: Readonly<Record<string, unknown>>;
  resolve: (body: any) => void;
  reject: (err: EngineError) => void;
  timer: NodeJS.Timeout | null;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | null;
  sent: boolean;
  internal: boolean;
}

type TelemetryHandler<S extends StreamName> = (body: TelemetryOf<S>) => void;

export interface ClientEvents {
  state: [state: ClientState, previous: ClientState];
  welcome: [body: ReplyBodies["welcome"]];
  /** A session opened on an engine process other than the previous one: push the project state again. */
  engineRestarted: [instance: string, previous: string];
  /** Every telemetry frame: the body as sent, except `scope`/`spectrum`, given as {@link ScopeFrame}/{@link SpectrumFrame}. */
  telemetry: [name: string, body: Record<string, unknown> | ScopeFrame | SpectrumFrame];
  /**
   * Analysis frames (the same objects `onTelemetry("scope")` gets). Called on the event loop,
   * synchronously while the socket's bytes are read, in arrival order. The Float32Arrays may be
   * views of the received bytes: valid for as long as they are held (Node never reuses a read's
   * memory), keeping that read's buffer alive meanwhile. A frame that breaks the spec never
   * reaches a listener: the connection is closed instead (see `disconnected`).
   */
  scope: [frame: ScopeFrame];
  spectrum: [frame: SpectrumFrame];
  /**
   * A subscription the client re-sent in a new session was refused by the engine (e.g. the
   * restarted engine has fewer taps: `out_of_range`; `error.fromEngine` is always true), which
   * also forgets the subscription. Not emitted when the re-sent subscribe was answered
   * `shutting_down` (the session ended first) or was lost with its
   * connection or to close(): the subscription is kept and sent again in the next session.
   */
  subscriptionFailed: [stream: AnyStream, tap: number | undefined, error: EngineError];
  /** The engine's `error` frames without `ref` (diagnostics), `log` frames, and `goodbye`. */
  engineError: [body: ErrorBodies["error"]];
  log: [body: ErrorBodies["log"]];
  goodbye: [body: ErrorBodies["goodbye"]];
  /**
   * A connection attempt failed or a connection ended; `reason` says what happened, e.g.
   * `connect ECONNREFUSED 127.0.0.1:40399` (nothing listening; the socket error's message),
   * `the engine closed the connection`, `bad_token: missing or wrong session token`,
   * `no endpoint: …` (the endpoint function threw), a protocol fault (`bad_preface: …`).
   * `info.connected` tells a connection that was never made from one that closed.
   */
  disconnected: [reason: string, info: DisconnectInfo];
}

/**
 * A client for one engine: connects, handshakes, heartbeats, reconnects, and matches answers.
 * Every request settles exactly once with a reply body or an {@link EngineError}; no promise it
 * creates is ever left unhandled. Call {@link start} (or use the supervisor), then {@link request}.
 */
export class EngineClient extends EventEmitter<ClientEvents> {
  private _state: ClientState = "closed";
  private started = false;
  private closing = false; // close() called: nothing new is admitted
  private readonly endpoint: EndpointSource;
  private readonly opts: Required<Omit<ClientOptions, "token" | "reconnect">> & { token: string | undefined; reconnect: ReconnectOptions | false };
  private sock: net.Socket | null = null;
  private reader = new FrameReader();
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly waiting: Pending[] = []; // never sent: room, drain or the next session
  private writable = true; // false between a write() that returned false and 'drain'
  private readonly subs = new Map<string, Record<string, unknown>>(); // subKey → subscribe body
  private readonly subReplaced = new Map<Record<string, unknown>, Record<string, unknown> | undefined>(); // subscribe body in flight → the entry it replaced in subs
  private askAttachments: boolean; // this connection's hello asks; false once an engine that predates attachments refused the field (reset per socket)
  private sessionAttachments = false; // this socket's welcome said attachments: true (set as it is read, before onHello)
  private readerStats: AttachmentStats = { views: 0, copies: 0, joined: 0 }; // of earlier sockets
  private readonly telemetryHandlers = new Map<string, Set<(body: any) => void>>();
  private instance: string | null = null;
  private welcomeBody: ReplyBodies["welcome"] | null = null;
  private maxPayload = PRE_WELCOME_MAX_PAYLOAD;
  private hbTimer: NodeJS.Timeout | null = null;
  private closeCall: Promise<void> | null = null; // close() under way
  private owedCheck: (() => void) | null = null; // close() waiting: called when an answer settles or the socket closes
  private lastWrite = 0;
  private lastRead = 0; // Date.now() of the last bytes from the engine
  private pingOutstandingSince = 0; // Date.now() of the oldest unanswered heartbeat ping, 0 = none
  private handshakeTimer: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private failure: Failure | null = null; // why the state became failed: what start()/ready() reject with
  private lastAttempt: { reason: string; cause: unknown } | null = null; // the latest failed attempt before the first session
  private startedAt = 0; // Date.now() at start()
  private startTries = 0; // failed attempts before the first session
  private sockConnected = false; // this socket's TCP connection was made
  private sockSession = false; // a session was ready on this socket
  private unrefd = false;
  private lastHealth: TelemetryBodies["engine.health"] | null = null;
  private lastTransport: TelemetryBodies["transport.state"] | null = null;

  constructor(endpoint: EndpointSource, options: ClientOptions = {}) {
    super();
    this.endpoint = endpoint;
    this.opts = {
      token: options.token,
      clientName: options.clientName ?? "@loophole/ipc/0.1.0",
      requestTimeoutMs: options.requestTimeoutMs ?? 5_000,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 5_000,
      maxInFlight: options.maxInFlight ?? 256,
      onFull: options.onFull ?? "wait",
      maxWaiting: options.maxWaiting ?? 65_536,
      queueWhileDisconnected: options.queueWhileDisconnected ?? 0,
      reconnect: options.reconnect ?? {},
      heartbeat: options.heartbeat ?? true,
      random: options.random ?? Math.random,
      attachments: options.attachments ?? true,
      startTimeoutMs: options.startTimeoutMs ?? 3_000,
    };
    this.askAttachments = this.opts.attachments;
  }

  /** The connection state. */
  get state(): ClientState {
    return this._state;
  }
  /** The current session's `welcome` body, or null when not ready. */
  get welcome(): ReplyBodies["welcome"] | null {
    return this._state === "ready" ? this.welcomeBody : null;
  }
  /** Whether this session's frames may carry attachments (asked, and `welcome.attachments`); false when not ready. */
  get attachments(): boolean {
    return this._state === "ready" && this.sessionAttachments;
  }
  /** Taps the engine has (`welcome.taps`; 0 = no analysis streams); 0 when not ready. */
  get taps(): number {
    const t = this.welcome?.taps;
    return typeof t === "number" ? t : 0;
  }
  /** Attachments received so far on every socket of this client: views (no copy) vs copies. */
  get attachmentStats(): AttachmentStats {
    const r = this.reader.stats;
    return { views: this.readerStats.views + r.views, copies: this.readerStats.copies + r.copies, joined: this.readerStats.joined + r.joined };
  }
  /** The latest `engine.health` (snapshot or subscribed), across reconnects; null before any. */
  get health(): TelemetryBodies["engine.health"] | null {
    return this.lastHealth;
  }
  /** The latest `transport.state`, across reconnects; null before any. */
  get transport(): TelemetryBodies["transport.state"] | null {
    return this.lastTransport;
  }
  /** Commands written and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }
  /** Requests not yet sent (waiting for room, drain or a session). */
  get queued(): number {
    return this.waiting.length;
  }

  /**
   * Starts connecting. Resolves when the first session is ready. Rejects when the client fails
   * or closes first, with the cause: when no session could be opened within
   * {@link ClientOptions.startTimeoutMs} (default 3 000 ms; settled at most `handshakeTimeoutMs`
   * later, once the endpoint is known: an endpoint function's own promise is waited for as long
   * as it takes, as the supervisor's wait for the engine's announcement is bounded by its
   * `listenTimeoutMs`), with the engine's refusal of `hello` (`bad_token`, `protocol_version`,
   * `session_busy`…, `fromEngine` true) or `not_sent` whose message names what happened
   * (`connect ECONNREFUSED 127.0.0.1:40399 (9 attempts in 3012 ms)`, `no endpoint: …`, a
   * protocol fault) and whose `cause` is the underlying error. The rejection is handled already:
   * a caller that does not await it (and watches `state` instead) gets no unhandled rejection;
   * one that awaits it still sees it. Calling it again returns the same outcome; a `failed` or
   * `closed` client does not start again.
   */
  start(): Promise<void> {
    if (!this.started) {
      this.started = true;
      this.startedAt = Date.now();
      this.connect();
    }
    const p = this.ready();
    p.catch(() => {});
    return p;
  }

  /** Resolves when the state is `ready`; rejects if it becomes `closed`/`failed` first, as {@link start} says. */
  ready(): Promise<void> {
    if (this._state === "ready") return Promise.resolve();
    if (this.started && (this._state === "closed" || this._state === "failed")) return Promise.reject(this.endError());
    return new Promise((resolve, reject) => {
      const on = (s: ClientState) => {
        if (s === "ready") resolve();
        else if (s === "closed" || s === "failed") reject(this.endError());
        else return;
        this.off("state", on);
      };
      this.on("state", on);
    });
  }

  /** What ready() rejects with once the client is `failed` or `closed`: the cause, when there is one. */
  private endError(): EngineError {
    const f = this.failure;
    if (this._state === "failed" && f) return new EngineError(f.code, f.message, { fromEngine: f.fromEngine, cause: f.cause });
    const last = this.lastAttempt;
    if (this.instance === null && last) return new EngineError("not_sent", `client closed before the first session (last attempt: ${last.reason})`, { cause: last.cause });
    return new EngineError("not_sent", `client is ${this._state}`);
  }

  /** Lets the process exit while this client is connected (sockets and timers unref'd). */
  unref(): this {
    this.unrefd = true;
    this.sock?.unref();
    for (const t of [this.hbTimer, this.handshakeTimer, this.reconnectTimer]) t?.unref();
    return this;
  }

  /**
   * Sends command `name` and resolves with its reply's body (typed by name). Rejects with an
   * {@link EngineError}: the engine's code, or `not_sent`, `outcome_unknown`, `timeout`, `aborted`.
   * Never re-sent by the client after a reconnect.
   */
  request<N extends CommandName>(name: N, body: CommandBodies[N], options: RequestOptions = {}): Promise<ReplyOf<N>> {
    return new Promise<ReplyOf<N>>((resolve, reject) => {
      const p: Pending = { id: -1, name, frameBody: body as Record<string, unknown>, resolve, reject, timer: null, signal: options.signal, onAbort: null, sent: false, internal: false };
      this.admit(p, options.timeoutMs ?? this.opts.requestTimeoutMs);
    });
  }

  /**
   * Subscribes now and in every later session (subscriptions are per session): a plain stream at
   * `rateHz` (1 … 120), or an analysis stream of one tap (`scope`: points 16 … 1024; `spectrum`:
   * bins a power of two 16 … 4096; rateHz 1 … 60; at most 8 analysis subscriptions). Keyed by
   * (stream, tap): subscribing the same key again replaces its parameters. The engine checks
   * the values (`out_of_range`, and its code for a 9th) and a refusal leaves its subscription as
   * it was: the client then forgets a new key, so it is not re-sent, and keeps the parameters a
   * refused update would have replaced (re-sent as before). Rejects like {@link request}.
   */
  subscribe(stream: PlainStream, rateHz: number, options?: RequestOptions): Promise<void>;
  subscribe(stream: "scope", params: ScopeParams, options?: RequestOptions): Promise<void>;
  subscribe(stream: "spectrum", params: SpectrumParams, options?: RequestOptions): Promise<void>;
  async subscribe(stream: AnyStream, p: number | ScopeParams | SpectrumParams, options: RequestOptions = {}): Promise<void> {
    let body: Record<string, unknown>;
    if (typeof p === "number") body = { stream, rate_hz: p };
    else if (stream === "scope") body = { stream, rate_hz: p.rateHz, tap: p.tap, points: (p as ScopeParams).points };
    else body = { stream, rate_hz: p.rateHz, tap: p.tap, bins: (p as SpectrumParams).bins };
    const key = subKey(stream, typeof p === "number" ? undefined : p.tap);
    this.subReplaced.set(body, this.subs.get(key));
    this.subs.set(key, body);
    try {
      await this.request("telemetry.subscribe", body as CommandBodies["telemetry.subscribe"], options);
    } catch (e) {
      if (refusedByEngine(e)) this.subscribeRefused(key, body);
      throw e;
    } finally {
      this.subReplaced.delete(body);
    }
  }

  /** The engine refused `body` and kept what it had for `key`: remember that again (what `body` replaced, or nothing). */
  private subscribeRefused(key: string, body: Record<string, unknown>): void {
    const before = this.subReplaced.get(body);
    if (this.subs.get(key) === body) {
      if (before === undefined) this.subs.delete(key);
      else this.subs.set(key, before);
    } else {
      // Replaced meanwhile by a subscribe still in flight: should that one be refused too, it
      // restores what this one replaced, not this refused body.
      for (const [b, r] of this.subReplaced) if (r === body) this.subReplaced.set(b, before);
    }
  }

  /**
   * Stops a stream now and in later sessions: `tap` given, that (stream, tap) key; omitted,
   * every tap of the stream. Unsubscribing what is not subscribed is still `ack`.
   */
  unsubscribe(stream: AnyStream, options?: RequestOptions): Promise<void>;
  unsubscribe(stream: AnalysisStream, tap: number, options?: RequestOptions): Promise<void>;
  async unsubscribe(stream: AnyStream, tapOrOptions?: number | RequestOptions, options: RequestOptions = {}): Promise<void> {
    const tap = typeof tapOrOptions === "number" ? tapOrOptions : undefined;
    const opts = typeof tapOrOptions === "object" ? tapOrOptions : options;
    if (tap !== undefined) this.subs.delete(subKey(stream, tap));
    else for (const [k, b] of this.subs) if (b.stream === stream) this.subs.delete(k);
    const body: Record<string, unknown> = tap === undefined ? { stream } : { stream, tap };
    await this.request("telemetry.unsubscribe", body as CommandBodies["telemetry.unsubscribe"], opts);
  }

  /** Calls `fn` with every `name` telemetry frame's body. Returns a function that removes it. */
  onTelemetry<S extends StreamName>(name: S, fn: TelemetryHandler<S>): () => void {
    let set = this.telemetryHandlers.get(name);
    if (!set) this.telemetryHandlers.set(name, (set = new Set()));
    set.add(fn);
    return () => void set!.delete(fn);
  }

  /**
   * Telemetry `name` as an async iterator, latest value wins: a consumer slower than the stream
   * sees the newest frame when it asks again, never a backlog (memory stays one frame). Ends when
   * `signal` aborts, on `return()`/`break`, or when the client closes.
   */
  telemetry<S extends StreamName>(name: S, options: { signal?: AbortSignal } = {}): AsyncIterableIterator<TelemetryOf<S>> {
    type B = TelemetryOf<S>;
    let latest: B | undefined;
    let has = false;
    let done = false;
    const wakes: Array<(r: IteratorResult<B>) => void> = []; // next() calls waiting, oldest first
    const finish = () => {
      if (done) return;
      done = true;
      off();
      this.off("state", onState);
      options.signal?.removeEventListener("abort", finish);
      for (const w of wakes.splice(0)) w({ value: undefined, done: true });
    };
    const off = this.onTelemetry(name, (b) => {
      const w = wakes.shift();
      if (w) w({ value: b, done: false });
      else {
        latest = b;
        has = true;
      }
    });
    const onState = (s: ClientState) => {
      if (s === "closed" || s === "failed") finish();
    };
    this.on("state", onState);
    if (options.signal?.aborted) finish();
    else options.signal?.addEventListener("abort", finish, { once: true });
    const it: AsyncIterableIterator<B> = {
      next: () => {
        if (has) {
          has = false;
          const v = latest as B;
          latest = undefined;
          return Promise.resolve({ value: v, done: false });
        }
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((r) => void wakes.push(r));
      },
      return: () => {
        finish();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }

  /**
   * Ends the client: sends `goodbye` when a session is open, then waits at most `timeoutMs` (0:
   * not at all) until every command already sent is answered (its ack included: answers of the
   * audio route may come after it, envelope.md) or the engine closes the socket, then closes.
   * Waiting requests reject `not_sent`, answers still missing reject `outcome_unknown`. Never
   * rejects. A second call while one is under way returns the same promise.
   */
  close(timeoutMs = 1_000): Promise<void> {
    return (this.closeCall ??= this.closeNow(timeoutMs).finally(() => (this.closeCall = null)));
  }

  private async closeNow(timeoutMs: number): Promise<void> {
    if (this._state === "closed" || this._state === "failed") {
      this.started = true;
      this.setState("closed");
      return;
    }
    this.closing = true;
    this.clearReconnect();
    this.failWaiting("not_sent", "client closed");
    if (this._state === "ready" && this.sock) {
      this.closing = true; // no new requests from here on
      const sock = this.sock;
      if (this.hbTimer) clearInterval(this.hbTimer); // a ping after goodbye would never be answered
      this.hbTimer = null;
      void this.internalRequest("goodbye", {}, 0); // settled by the answer or by teardown below
      if (timeoutMs > 0) await this.owedSettled(sock, timeoutMs);
    }
    this.teardown("client closed", "outcome_unknown");
    this.started = true;
    this.setState("closed");
  }

  /** Resolves when nothing sent on `sock` is owed an answer any more, `sock` has closed, or after `ms`. */
  private owedSettled(sock: net.Socket, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.owedCheck = null;
        resolve();
      };
      const t = setTimeout(done, ms);
      if (this.unrefd) t.unref();
      this.owedCheck = () => {
        if (this.pending.size === 0 || this.sock !== sock || sock.destroyed) done();
      };
      this.owedCheck();
    });
  }

  // ---- requests ----------------------------------------------------------------------------

  private admit(p: Pending, timeoutMs: number): void {
    if (p.signal?.aborted) return p.reject(new EngineError("aborted", "aborted before sending", { command: p.name }));
    if (this.closing || (this.started && (this._state === "closed" || this._state === "failed"))) {
      return p.reject(new EngineError("not_sent", `client is ${this._state === "closed" || this._state === "failed" ? this._state : "closing"}`, { command: p.name }));
    }
    if (timeoutMs > 0) {
      p.timer = setTimeout(() => this.settleErr(p, p.sent ? "timeout" : "not_sent", p.sent ? `no answer in ${timeoutMs} ms` : `not sent within ${timeoutMs} ms`, true), timeoutMs);
      if (this.unrefd) p.timer.unref();
    }
    if (p.signal) {
      p.onAbort = () => this.settleErr(p, "aborted", p.sent ? "aborted after sending: outcome unknown" : "aborted before sending", true);
      p.signal.addEventListener("abort", p.onAbort, { once: true });
    }
    if (this._state !== "ready") {
      // Not ready (or not started yet): at once not_sent, unless the caller opted into a queue.
      if (this.waiting.length < this.opts.queueWhileDisconnected) return void this.waiting.push(p);
      return this.settleErr(p, "not_sent", `not connected (${this.started ? this._state : "not started"})`, false);
    }
    if (this.waiting.length > 0 || !this.hasRoom()) {
      if (this.opts.onFull === "reject") return this.settleErr(p, "not_sent", this.writable ? `${this.pending.size} commands in flight (max ${this.opts.maxInFlight})` : "socket buffer full", false);
      if (this.waiting.length >= this.opts.maxWaiting) return this.settleErr(p, "not_sent", `${this.waiting.length} requests already waiting`, false);
      return void this.waiting.push(p);
    }
    this.send(p);
  }

  private hasRoom(): boolean {
    return this.writable && this.pending.size < this.opts.maxInFlight;
  }

  private allocId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = (this.nextId + 1) >>> 0; // u32, wraps at 2^32
      if (!this.pending.has(id)) return id;
    }
  }

  private send(p: Pending): void {
    const sock = this.sock!;
    p.id = this.allocId();
    let frame: Buffer;
    try {
      frame = encodeCommand(p.name, p.id, p.frameBody, this.maxPayload);
    } catch (e) {
      return this.settleErr(p, "not_sent", e instanceof EncodeError ? e.message : String(e), false);
    }
    p.sent = true;
    this.pending.set(p.id, p);
    this.lastWrite = Date.now();
    if (!sock.write(frame)) this.writable = false;
  }

  private pump(): void {
    while (this.waiting.length > 0 && this._state === "ready" && this.hasRoom()) this.send(this.waiting.shift()!);
  }

  private cleanup(p: Pending): void {
    if (p.timer) clearTimeout(p.timer);
    p.timer = null;
    if (p.signal && p.onAbort) p.signal.removeEventListener("abort", p.onAbort);
    p.onAbort = null;
  }

  /** Rejects p once; removes it from wherever it is. */
  private settleErr(p: Pending, code: ClientErrorCode, message: string, removeFromQueues: boolean): void {
    this.cleanup(p);
    if (removeFromQueues) {
      if (p.sent) {
        if (this.pending.get(p.id) !== p) return; // already settled
        this.pending.delete(p.id);
      } else {
        const i = this.waiting.indexOf(p);
        if (i < 0) return;
        this.waiting.splice(i, 1);
      }
    }
    p.reject(new EngineError(code, message, { command: p.name }));
    if (removeFromQueues) this.pump();
    this.owedCheck?.();
  }

  private internalRequest<N extends CommandName>(name: N, body: CommandBodies[N], timeoutMs: number): Promise<ReplyOf<N> | EngineError> {
    return new Promise<ReplyOf<N> | EngineError>((resolve) => {
      const p: Pending = { id: -1, name, frameBody: body as Record<string, unknown>, resolve, reject: resolve, timer: null, signal: undefined, onAbort: null, sent: false, internal: true };
      if (timeoutMs > 0) {
        p.timer = setTimeout(() => this.settleErr(p, "timeout", `no answer in ${timeoutMs} ms`, true), timeoutMs);
        if (this.unrefd) p.timer.unref();
      }
      this.send(p); // bypasses the in-flight bound: heartbeats and re-subscriptions must go out
    });
  }

  private failWaiting(code: ClientErrorCode, message: string): void {
    for (const p of this.waiting.splice(0)) {
      this.cleanup(p);
      p.reject(new EngineError(code, message, { command: p.name }));
    }
  }

  // ---- connection --------------------------------------------------------------------------

  private setState(s: ClientState): void {
    const prev = this._state;
    if (prev === s) return;
    this._state = s;
    this.emit("state", s, prev);
  }

  private connect(): void {
    this.setState(this.instance === null && this.attempt === 0 ? "connecting" : "reconnecting");
    const attemptStarted = this.attempt;
    Promise.resolve()
      .then(() => (typeof this.endpoint === "function" ? this.endpoint() : this.endpoint))
      .then(
        (ep) => {
          if (this._state !== "connecting" && this._state !== "reconnecting") return; // closed meanwhile
          if (this.attempt !== attemptStarted) return;
          this.openSocket(ep);
        },
        (err: unknown) => {
          if (this.attempt !== attemptStarted) return;
          this.lost(`no endpoint: ${err instanceof Error ? err.message : String(err)}`, err);
        },
      );
  }

  private openSocket(ep: Endpoint): void {
    const st = this.reader.stats;
    this.readerStats = { views: this.readerStats.views + st.views, copies: this.readerStats.copies + st.copies, joined: this.readerStats.joined + st.joined };
    this.askAttachments = this.opts.attachments; // a refusal lasts one connection: the engine may have been upgraded
    this.reader = new FrameReader({ maxFrame: ENGINE_MAX_PAYLOAD, attachments: this.askAttachments });
    this.sessionAttachments = false;
    this.maxPayload = PRE_WELCOME_MAX_PAYLOAD;
    this.writable = true;
    this.sockConnected = this.sockSession = false;
    const host = ep.host ?? "127.0.0.1";
    const sock = net.createConnection({ host, port: ep.port, noDelay: true });
    this.sock = sock;
    if (this.unrefd) sock.unref();
    this.handshakeTimer = setTimeout(() => {
      if (this.sock !== sock) return;
      if (this.sockConnected) this.drop(sock, `no welcome within ${this.opts.handshakeTimeoutMs} ms`);
      else this.drop(sock, `connect ${host}:${ep.port}: no connection within ${this.opts.handshakeTimeoutMs} ms`);
    }, this.opts.handshakeTimeoutMs);
    if (this.unrefd) this.handshakeTimer.unref();
    sock.on("connect", () => {
      if (this.sock !== sock) return;
      this.sockConnected = true;
      sock.setNoDelay(true); // small frames: do not let Nagle hold them back
      this.setState("handshaking");
      sock.write(PREFACE);
      this.sendHello(sock);
    });
    sock.on("data", (chunk: Buffer) => {
      if (this.sock !== sock) return;
      let envs: Envelope[];
      try {
        envs = this.reader.push(chunk);
      } catch (e) {
        return this.drop(sock, e instanceof ProtocolError ? e.message : String(e), e);
      }
      this.pingOutstandingSince = 0; // any byte from the engine proves it alive
      this.lastRead = Date.now();
      // A listener that throws must not cost the frames behind it in this chunk (an answer lost
      // would leave its request pending): the first such error is rethrown after the loop, an
      // uncaught exception as from any event.
      let thrown: { error: unknown } | null = null;
      for (const env of envs) {
        if (this.sock !== sock) break;
        let body: Record<string, unknown> | ScopeFrame | SpectrumFrame;
        try {
          body = this.bodyOf(env);
        } catch (e) {
          this.drop(sock, e instanceof ProtocolError ? e.message : String(e), e);
          break;
        }
        try {
          this.dispatch(env, body);
        } catch (e) {
          thrown ??= { error: e };
        }
      }
      if (thrown) throw thrown.error;
    });
    sock.on("drain", () => {
      if (this.sock !== sock) return;
      this.writable = true;
      this.pump();
    });
    let sockError: Error | null = null;
    sock.on("error", (e) => void (sockError ??= e)); // 'close' follows with the outcome
    sock.on("close", () => {
      if (this.sock !== sock) return;
      this.owedCheck?.();
      if (this.sock !== sock) return;
      const e = sockError as Error | null;
      // Not connected: the socket's own words name it (`connect ECONNREFUSED 127.0.0.1:40399`).
      if (!this.sockConnected) this.lost(e ? e.message : `connect ${host}:${ep.port}: closed before connecting`, e ?? undefined);
      else this.lost(e ? `connection lost: ${e.message}` : "the engine closed the connection", e ?? undefined);
    });
  }

  private sendHello(sock: net.Socket): void {
    const asked = this.askAttachments;
    const hello: CommandBodies["hello"] & { attachments?: boolean } = { protocol: 1, client: this.opts.clientName };
    if (this.opts.token !== undefined) hello.token = this.opts.token;
    if (asked) hello.attachments = true; // absent = false: the hello is byte-identical otherwise
    // onHello emits events (state, welcome, engineRestarted): run it outside the promise chain, so a
    // listener that throws surfaces as an uncaught exception, as from any event, never as an
    // unhandled rejection.
    void this.internalRequest("hello", hello as CommandBodies["hello"], 0).then((r) => queueMicrotask(() => this.onHello(sock, r, asked)));
  }

  private onHello(sock: net.Socket, r: ReplyBodies["welcome"] | EngineError, asked: boolean): void {
    if (this.sock !== sock) return;
    if (r instanceof EngineError && r.fromEngine && r.code === "invalid_field" && asked) {
      // An engine from before attachments: the session stays in handshake (session.md); ask again
      // without the field. The reader keeps accepting the flag, harmlessly: welcome decides.
      this.askAttachments = false;
      return this.sendHello(sock);
    }
    if (r instanceof EngineError) {
      // protocol_version, bad_token, a malformed hello body (invalid_field/out_of_range: the
      // retry without `attachments` is behind us, so it is our name or token) and a hello this
      // client cannot encode (not_sent) will not heal by retrying; session_busy may.
      if (r.fromEngine ? ["protocol_version", "bad_token", "invalid_field", "out_of_range"].includes(r.code) : r.code === "not_sent") {
        this.teardown(r.message, "outcome_unknown", r);
        this.fail(r.message, r);
        return;
      }
      return this.drop(sock, `hello refused: ${r.message}`, r);
    }
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.attempt = 0;
    this.lastAttempt = null;
    this.sockSession = true;
    this.welcomeBody = r;
    this.maxPayload = r.max_frame; // range-checked by checkWelcome
    const previous = this.instance;
    this.instance = r.instance;
    for (const [key, body] of this.subs) void this.internalRequest("telemetry.subscribe", body as CommandBodies["telemetry.subscribe"], this.opts.requestTimeoutMs).then((res) => this.onResubscribed(key, body, res));
    this.startHeartbeat(r.heartbeat_ms, r.timeout_ms);
    this.setState("ready");
    this.emit("welcome", r);
    if (previous !== null && previous !== r.instance) this.emit("engineRestarted", r.instance, previous);
    this.pump();
  }

  private startHeartbeat(heartbeatMs: number, timeoutMs: number): void {
    if (!this.opts.heartbeat || !(heartbeatMs > 0)) return;
    this.pingOutstandingSince = 0;
    this.lastWrite = this.lastRead = Date.now();
    const tick = Math.max(1, Math.floor(heartbeatMs / 2));
    let nonce = 0;
    this.hbTimer = setInterval(() => {
      const sock = this.sock;
      if (!sock || this._state !== "ready") return;
      const now = Date.now();
      if (this.pingOutstandingSince !== 0 && now - this.pingOutstandingSince > timeoutMs) {
        return this.drop(sock, `engine silent: no answer to a ping for more than ${timeoutMs} ms`);
      }
      // Idle: the engine must hear from us. Writing but hearing nothing: a ping makes the silence
      // measurable (commands alone never would, while they keep lastWrite fresh).
      if (now - this.lastWrite >= heartbeatMs - tick || (this.pingOutstandingSince === 0 && now - this.lastRead >= heartbeatMs - tick)) {
        if (this.pingOutstandingSince === 0) this.pingOutstandingSince = now;
        nonce = (nonce + 1) >>> 0;
        void this.internalRequest("ping", { nonce }, 0);
      }
    }, tick);
    if (this.unrefd) this.hbTimer.unref();
  }

  private onResubscribed(key: string, body: Record<string, unknown>, res: unknown): void {
    // Only the engine's refusal: a local outcome (the connection dropped, close(), a timeout) says
    // nothing about the subscription, which stays remembered and is re-sent in the next session.
    if (!refusedByEngine(res)) return;
    if (this.subs.get(key) === body) this.subs.delete(key);
    // Out of the promise chain this runs in: a listener that throws is an uncaught exception, as
    // from the events emitted by the socket's handlers, never an unhandled rejection.
    queueMicrotask(() => this.emit("subscriptionFailed", body.stream as AnyStream, typeof body.tap === "number" ? body.tap : undefined, res));
  }

  /**
   * The body listeners get; checks what the spec asks a client to check (throws ProtocolError):
   * an attachment only when this session's welcome allowed it, analysis bodies well-formed, and
   * the welcome fields the client computes with of the JSON type the schema gives them.
   */
  private bodyOf(env: Envelope): Record<string, unknown> | ScopeFrame | SpectrumFrame {
    if (attachmentOf(env) && !(env.type === "telemetry" && this.sessionAttachments)) {
      const why = env.type !== "telemetry" ? "only telemetry may carry one" : "this session's welcome did not allow attachments";
      throw new ProtocolError("bad_attachment", `${env.type} ${env.name} has an attachment, but ${why}`);
    }
    if (env.type === "reply" && env.ref !== undefined && this.pending.get(env.ref)?.name === "hello") checkWelcome(env.body);
    if (env.type !== "telemetry") return env.body;
    if (env.name === "scope") return decodeScope(env);
    if (env.name === "spectrum") return decodeSpectrum(env);
    return env.body;
  }

  private dispatch(env: Envelope, body: Record<string, unknown> | ScopeFrame | SpectrumFrame): void {
    if ((env.type === "reply" || env.type === "error") && env.ref !== undefined) {
      const p = this.pending.get(env.ref);
      if (p) {
        this.pending.delete(env.ref);
        this.cleanup(p);
        // Frames after welcome in the same chunk are read before onHello runs (a microtask later).
        if (env.type === "reply" && p.name === "hello") this.sessionAttachments = this.askAttachments && this.reader.acceptsAttachments && env.body.attachments === true;
        if (env.type === "reply") p.resolve(env.body);
        else {
          const b = env.body as ErrorBodies["error"];
          // Both read as sent only when they are strings: String() of an object such as
          // {"toString":1} throws, and this runs in the socket's data handler.
          p.reject(new EngineError(typeof b.code === "string" ? b.code : "internal", typeof b.message === "string" ? b.message : "", { fromEngine: true, command: p.name }));
        }
        this.pump();
        this.owedCheck?.();
        return;
      }
      // An answer nobody waits for any more (timed out or aborted), reply or error: ignored.
      // (`engineError` is for errors without ref: diagnostics that answer no command.)
      if (env.type === "reply" || env.name === "error") return;
    }
    if (env.type === "telemetry") {
      if (env.name === "engine.health") this.lastHealth = env.body as TelemetryBodies["engine.health"];
      else if (env.name === "transport.state") this.lastTransport = env.body as TelemetryBodies["transport.state"];
      const set = this.telemetryHandlers.get(env.name);
      if (set) for (const fn of set) fn(body);
      if (env.name === "scope") this.emit("scope", body as ScopeFrame);
      else if (env.name === "spectrum") this.emit("spectrum", body as SpectrumFrame);
      this.emit("telemetry", env.name, body);
    } else if (env.type === "error") {
      if (env.name === "goodbye") this.emit("goodbye", env.body as ErrorBodies["goodbye"]);
      else if (env.name === "log") this.emit("log", env.body as ErrorBodies["log"]);
      else this.emit("engineError", env.body as ErrorBodies["error"]);
    } // anything else: ignored, for forward compatibility
  }

  /** Closes one socket on purpose (a protocol fault, a silent engine); reconnects as policy says. */
  private drop(sock: net.Socket, reason: string, cause?: unknown): void {
    if (this.sock !== sock) return;
    this.lost(reason, cause);
  }

  /**
   * Ends the current socket; settles what it owed. Emits `disconnected` when there was a socket
   * or `attemptFailed` (an attempt that ended before it had one: the endpoint function threw).
   */
  private teardown(reason: string, sentCode: ClientErrorCode, cause?: unknown, attemptFailed = false): void {
    if (this.hbTimer) clearInterval(this.hbTimer);
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.hbTimer = this.handshakeTimer = null;
    const sock = this.sock;
    this.sock = null;
    sock?.destroy();
    const owed = [...this.pending.values()];
    this.pending.clear();
    for (const p of owed) {
      this.cleanup(p);
      p.reject(new EngineError(sentCode, `${reason} before the answer`, { command: p.name }));
    }
    // Requests waiting for room (not the opt-in disconnected queue) were meant for this session.
    const keep = this.opts.queueWhileDisconnected;
    if (this.waiting.length > keep) {
      for (const p of this.waiting.splice(keep)) {
        this.cleanup(p);
        p.reject(new EngineError("not_sent", reason, { command: p.name }));
      }
    }
    if (sock || attemptFailed) {
      const info: DisconnectInfo = { connected: sock !== null && this.sockConnected, session: sock !== null && this.sockSession };
      if (cause !== undefined) info.cause = cause;
      this.emit("disconnected", reason, info);
    }
  }

  /** The current attempt or session ended (`cause`: the error behind `reason`, if any); reconnects as policy says. */
  private lost(reason: string, cause?: unknown): void {
    if (this.closing || this._state === "closed" || this._state === "failed") return;
    const firstSession = this.instance === null;
    if (firstSession) {
      this.lastAttempt = { reason, cause };
      this.startTries++;
    }
    this.teardown(reason, "outcome_unknown", cause, true);
    const rc = this.opts.reconnect;
    if (rc === false || this.attempt >= (rc.maxAttempts ?? Infinity)) return this.fail(reason, cause);
    const delay = backoffDelay(this.attempt, rc, this.opts.random);
    const elapsed = Date.now() - this.startedAt;
    if (firstSession && elapsed + delay > this.opts.startTimeoutMs) {
      return this.fail(reason, cause, this.startTries > 1 ? ` (${this.startTries} attempts in ${elapsed} ms)` : "");
    }
    this.setState("reconnecting");
    this.attempt++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
    if (this.unrefd) this.reconnectTimer.unref();
  }

  /** Ends in `failed`: what start() and ready() reject with is the engine's refusal or `not_sent` carrying `reason` (+ `note`) and `cause`. */
  private fail(reason: string, cause: unknown, note = ""): void {
    const engine = cause instanceof EngineError && cause.fromEngine ? cause : null;
    const message = (cause instanceof EngineError && (engine || cause.code === "not_sent") ? reasonOf(cause) : reason) + note;
    this.failure = { code: engine ? engine.code : "not_sent", message, fromEngine: engine !== null, cause };
    this.failWaiting("not_sent", reason);
    this.setState("failed");
  }

  private clearReconnect(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }
}

/**
 * The welcome fields the client uses, beyond the optional `attachments`/`taps` (anything but
 * true / a number reads as false / 0). A wrong type here would throw later, in onHello or the
 * heartbeat timer, instead of closing the connection; a `max_frame` outside the range an engine
 * may be configured with (framing.md §4) would make the client refuse every command as too large
 * (below 64) or send frames no engine accepts.
 */
function checkWelcome(b: Record<string, unknown>): void {
  if (typeof b.instance !== "string") throw new ProtocolError("invalid_envelope", `welcome.instance must be a string, got ${typeof b.instance}`);
  const mf = b.max_frame;
  if (!isU32(mf) || mf < MIN_MAX_FRAME || mf > MAX_MAX_FRAME) {
    throw new ProtocolError("invalid_envelope", `welcome.max_frame must be an integer ${MIN_MAX_FRAME}..=${MAX_MAX_FRAME}, got ${typeof mf === "number" ? mf : typeof mf}`);
  }
  for (const k of ["heartbeat_ms", "timeout_ms"] as const) {
    if (!isU32(b[k])) throw new ProtocolError("invalid_envelope", `welcome.${k} must be a u32, got ${typeof b[k] === "number" ? b[k] : typeof b[k]}`);
  }
}

/**
 * Whether a subscribe's outcome is the engine refusing it. `shutting_down` is not: the session
 * ended before the command was carried out (errors.md), so it says nothing about the subscription.
 */
function refusedByEngine(e: unknown): e is EngineError {
  return e instanceof EngineError && e.fromEngine && e.code !== "shutting_down";
}

/** An EngineError's message without its `code: ` prefix. */
function reasonOf(e: EngineError): string {
  const prefix = `${e.code}: `;
  return e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message;
}

/** Subscriptions are keyed by (stream, tap); plain streams have no tap. */
function subKey(stream: string, tap: number | undefined): string {
  return tap === undefined || !isAnalysisStream(stream) ? stream : `${stream}#${tap}`;
}
