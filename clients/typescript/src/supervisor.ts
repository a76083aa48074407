// EngineSupervisor: owns the engine process (ports.md §3, §5, §7) and one EngineClient to it.
//
// Threading: the Node event loop; nothing blocks except the synchronous kill in the process
// 'exit' hook (one kill(2) call, or `taskkill` on Windows).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { readFile } from "node:fs/promises";
import { EngineClient, type ClientOptions, type Endpoint } from "./client";

/** The announcement line's prefix (ports.md §3). */
export const LISTEN_PREFIX = "LOOPHOLE_LISTEN ";
/** The environment variable that carries the session token (ports.md §5). */
export const TOKEN_ENV = "LOOPHOLE_SESSION_TOKEN";

export interface Announcement {
  host: string;
  port: number;
  pid: number;
  protocol: number;
  instance: string;
}

/** Parses a `LOOPHOLE_LISTEN {json}` line (or, with `prefix` false, a connection file's JSON); null if it is not one. */
export function parseAnnouncement(line: string, prefix = true): Announcement | null {
  let text = line.trim();
  if (prefix) {
    if (!line.startsWith(LISTEN_PREFIX)) return null;
    text = line.slice(LISTEN_PREFIX.length).trim();
  }
  let a: any;
  try {
    a = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof a !== "object" || a === null || typeof a.host !== "string" || !Number.isInteger(a.port) || a.port <= 0 || a.port > 65535) return null;
  // Number()/String() of an object such as {"toString":1} throws (and this runs in the stdout reader).
  return { host: a.host, port: a.port, pid: num(a.pid), protocol: num(a.protocol), instance: typeof a.instance === "string" ? a.instance : "" };
}

const num = (v: unknown): number => (typeof v === "number" || typeof v === "string" ? Number(v) : NaN);

export type SupervisorState = "idle" | "starting" | "running" | "restarting" | "stopping" | "stopped" | "failed";

/** Why the engine could not be started; carries the exit code and the tail of stderr. */
export class EngineStartError extends Error {
  override readonly name = "EngineStartError";
  constructor(
    message: string,
    readonly exitCode: number | null,
    readonly signal: NodeJS.Signals | null,
    readonly stderrTail: string,
  ) {
    super(stderrTail ? `${message}\n--- engine stderr (tail) ---\n${stderrTail}` : message);
  }
}

export interface SpawnOptions {
  /** Path of the engine binary. */
  binary: string;
  /** Extra arguments (never the token). `--supervisor-pid <this pid>` is added. */
  args?: string[];
  /** Extra environment; the token is added as LOOPHOLE_SESSION_TOKEN. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Session token; default 32 random bytes in hex. Empty string: no token. */
  token?: string;
  /** Deadline for the LOOPHOLE_LISTEN line, ms. Default 10 000. */
  listenTimeoutMs?: number;
  /** Crash restarts allowed per window before `failed`. Default 5 per 180 000 ms. */
  maxRestarts?: number;
  restartWindowMs?: number;
  /** Delay before restart n (0-based): min(max, initial·2^n). Default 100 ms .. 5 s. */
  restartBackoffMs?: { initial?: number; max?: number };
  /** Shutdown ladder: wait after engine.shutdown, after SIGTERM, after SIGKILL. Default 2 000, 2 000, 2 000 ms. */
  shutdownTimeoutsMs?: { graceful?: number; term?: number; kill?: number };
  /** Kill the engine when this Node process exits or gets SIGINT/SIGTERM. Default true. */
  killOnExit?: boolean;
  /** Lines of stderr kept for error messages. Default 40. */
  stderrTailLines?: number;
}

export interface ConnectOnlyOptions {
  /** A connection file written by an engine (ports.md §4)… */
  connectionFile?: string;
  /** …or a port (and host). */
  port?: number;
  host?: string;
  token?: string;
}

export interface SupervisorEvents {
  state: [state: SupervisorState, previous: SupervisorState];
  /** The engine process exited (code, signal); a restart may follow. */
  exit: [code: number | null, signal: NodeJS.Signals | null];
  /** A new engine process announced itself. */
  spawned: [announcement: Announcement];
  /** Lines the engine wrote to stderr (already drained; for logs). */
  stderr: [line: string];
  /** The restart budget ran out or a restart failed to start: the supervisor is `failed`. */
  failed: [error: Error];
}

const isWindows = process.platform === "win32";

/**
 * Spawns and keeps alive one engine process, and gives an {@link EngineClient} that follows it
 * across restarts. Or, in connect-only mode, just the client to an engine someone else started.
 */
export class EngineSupervisor extends EventEmitter<SupervisorEvents> {
  readonly client: EngineClient;
  private _state: SupervisorState = "idle";
  private readonly spawnOpts: SpawnOptions | null;
  private readonly connectOpts: ConnectOnlyOptions | null;
  private readonly token: string;
  private child: ChildProcess | null = null;
  private announcement: Announcement | null = null;
  private endpointWaiters: Array<{ resolve: (e: Endpoint) => void; reject: (e: Error) => void }> = [];
  private restarts: number[] = []; // Date.now() of each crash restart within the window
  private stderrTail: string[] = [];
  private restartTimer: NodeJS.Timeout | null = null;
  private starting: Promise<void> | null = null;
  private stopping: Promise<void> | null = null; // stop() under way
  private exitHooks: (() => void) | null = null;

  constructor(options: { spawn: SpawnOptions; client?: ClientOptions } | { connect: ConnectOnlyOptions; client?: ClientOptions }) {
    super();
    this.spawnOpts = "spawn" in options ? options.spawn : null;
    this.connectOpts = "connect" in options ? options.connect : null;
    this.token = this.spawnOpts ? (this.spawnOpts.token ?? randomBytes(32).toString("hex")) : (this.connectOpts!.token ?? "");
    const clientOpts: ClientOptions = { ...options.client };
    if (this.token !== "") clientOpts.token = this.token;
    this.client = new EngineClient(() => this.endpoint(), clientOpts);
  }

  get state(): SupervisorState {
    return this._state;
  }
  /** The running engine's announcement (spawn mode), or null. */
  get current(): Announcement | null {
    return this.announcement;
  }
  /** The running engine process's pid (spawn mode); null when none runs: before start(), while restarting, once `stopped` or `failed`. */
  get pid(): number | null {
    const c = this.child;
    return c && c.exitCode === null && c.signalCode === null ? (c.pid ?? null) : null;
  }

  /**
   * Spawns the engine (or finds it), and resolves when the client's first session is ready.
   * Rejects with {@link EngineStartError}, also when {@link stop} is called before that.
   */
  async start(): Promise<EngineClient> {
    if (this._state !== "idle") throw new Error(`supervisor is ${this._state}`);
    this.setState("starting");
    if (this.spawnOpts) {
      this.installExitHooks();
      try {
        await this.spawnOnce();
      } catch (e) {
        if (this.stateNow() === "starting") this.setState("failed"); // else stop() owns the state
        this.removeExitHooks();
        await this.client.close();
        throw e;
      }
      if (this.stateNow() !== "starting") throw this.stoppedDuringStart();
    }
    this.setState("running");
    try {
      await this.client.start();
    } catch (e) {
      const stopped = this.stateNow() === "stopping" || this.stateNow() === "stopped";
      await this.stop();
      throw stopped ? this.stoppedDuringStart() : e;
    }
    return this.client;
  }

  /** The state as it is now (after an await, where stop() may have changed it). */
  private stateNow(): SupervisorState {
    return this._state;
  }

  private stoppedDuringStart(): EngineStartError {
    return new EngineStartError("stop() was called before the engine was ready", null, null, "");
  }

  /**
   * Stops the engine: closes the client, then the ladder `engine.shutdown` → SIGTERM → SIGKILL
   * (Windows: `taskkill /T /F`), each with its timeout. No restart can begin once stop() is
   * called, and one in progress is waited for and then killed. Never rejects. A second call
   * while one is under way returns the same promise.
   */
  stop(): Promise<void> {
    return (this.stopping ??= this.stopNow().finally(() => (this.stopping = null)));
  }

  private async stopNow(): Promise<void> {
    if (this._state === "stopped") return;
    this.setState("stopping");
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    if (this.starting) await this.starting.catch(() => {});
    const child = this.child;
    const t = this.spawnOpts?.shutdownTimeoutsMs ?? {};
    if (child && child.exitCode === null && child.signalCode === null) {
      let asked = false;
      if (this.client.state === "ready") {
        // Step 1: ask. The ack comes before the engine's goodbye; the client then closes.
        asked = await this.client.request("engine.shutdown", {}, { timeoutMs: t.graceful ?? 2_000 }).then(() => true, () => false);
      }
      await this.client.close(200);
      if (!asked || !(await waitExit(child, t.graceful ?? 2_000))) {
        if (isWindows) killTree(child);
        else child.kill("SIGTERM");
        if (!(await waitExit(child, t.term ?? 2_000))) {
          if (isWindows) killTree(child);
          else child.kill("SIGKILL");
          await waitExit(child, t.kill ?? 2_000);
        }
      }
    } else {
      await this.client.close(200);
    }
    this.failEndpointWaiters(new Error("supervisor stopped"));
    this.removeExitHooks();
    this.child = null;
    this.setState("stopped");
  }

  // ---- endpoint for the client -------------------------------------------------------------

  private async endpoint(): Promise<Endpoint> {
    if (this.connectOpts) {
      if (this.connectOpts.connectionFile) {
        const file = this.connectOpts.connectionFile;
        let text: string;
        try {
          text = await readFile(file, "utf8");
        } catch (e) {
          // Node's message names the errno and the path; `code`/`errno`/`path` are kept for callers.
          const err = e as NodeJS.ErrnoException;
          throw Object.assign(new Error(`cannot read connection file: ${err.message}`, { cause: err }), { code: err.code, errno: err.errno, path: err.path ?? file });
        }
        const a = parseAnnouncement(text, false);
        if (!a) throw new Error(`${this.connectOpts.connectionFile} is not a connection file`);
        return { host: a.host, port: a.port };
      }
      if (this.connectOpts.port) return { host: this.connectOpts.host ?? "127.0.0.1", port: this.connectOpts.port };
      throw new Error("connect-only mode needs a connectionFile or a port");
    }
    if (this.announcement && this.child && this.child.exitCode === null) return { host: this.announcement.host, port: this.announcement.port };
    if (this._state === "failed" || this._state === "stopping" || this._state === "stopped") throw new Error(`engine ${this._state}`);
    return new Promise((resolve, reject) => this.endpointWaiters.push({ resolve, reject }));
  }

  private failEndpointWaiters(err: Error): void {
    for (const w of this.endpointWaiters.splice(0)) w.reject(err);
  }

  // ---- process -----------------------------------------------------------------------------

  private setState(s: SupervisorState): void {
    const prev = this._state;
    if (prev === s) return;
    this._state = s;
    this.emit("state", s, prev);
  }

  private spawnOnce(): Promise<void> {
    const p = this.doSpawn();
    this.starting = p;
    return p.finally(() => {
      if (this.starting === p) this.starting = null;
    });
  }

  private doSpawn(): Promise<void> {
    const o = this.spawnOpts!;
    const env: NodeJS.ProcessEnv = { ...process.env, ...o.env };
    if (this.token !== "") env[TOKEN_ENV] = this.token; // never argv: ps shows argv to everyone
    else delete env[TOKEN_ENV];
    const args = [...(o.args ?? []), "--supervisor-pid", String(process.pid)];
    this.stderrTail = [];
    this.announcement = null;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const child = spawn(o.binary, args, { env, cwd: o.cwd, stdio: ["ignore", "pipe", "pipe"], windowsHide: true });
      this.child = child;
      const tailMax = o.stderrTailLines ?? 40;
      const fail = (msg: string, code: number | null, sig: NodeJS.Signals | null) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
        // Give stderr a moment to deliver its last lines for the message.
        setImmediate(() => reject(new EngineStartError(msg, code, sig, this.stderrTail.join("\n"))));
      };
      const timer = setTimeout(() => fail(`engine printed no ${LISTEN_PREFIX.trim()} line within ${o.listenTimeoutMs ?? 10_000} ms`, null, null), o.listenTimeoutMs ?? 10_000);
      lines(child.stderr!, (line) => {
        this.stderrTail.push(line);
        if (this.stderrTail.length > tailMax) this.stderrTail.shift();
        this.emit("stderr", line);
      });
      lines(child.stdout!, (line) => {
        // Keep draining after the announcement: an unread pipe would block the engine.
        if (settled || this.announcement) return;
        const a = parseAnnouncement(line);
        if (!a) return;
        this.announcement = a;
        settled = true;
        clearTimeout(timer);
        this.emit("spawned", a);
        for (const w of this.endpointWaiters.splice(0)) w.resolve({ host: a.host, port: a.port });
        resolve();
      });
      child.on("error", (e) => fail(`cannot spawn ${o.binary}: ${e.message}`, null, null));
      child.on("exit", (code, sig) => {
        if (!settled) {
          // Wait for stderr to end so the tail is complete.
          child.stderr!.once("close", () => fail(`engine exited (code ${code}, signal ${sig}) before announcing its port`, code, sig));
          if (child.stderr!.closed) fail(`engine exited (code ${code}, signal ${sig}) before announcing its port`, code, sig);
          return;
        }
        if (this.child === child) this.onExit(code, sig);
      });
    });
  }

  private onExit(code: number | null, sig: NodeJS.Signals | null): void {
    this.emit("exit", code, sig);
    this.announcement = null;
    if (this._state !== "running") return; // stopping, stopped or failed: no restart
    const o = this.spawnOpts!;
    const now = Date.now();
    const windowMs = o.restartWindowMs ?? 180_000;
    this.restarts = this.restarts.filter((t) => now - t < windowMs);
    if (this.restarts.length >= (o.maxRestarts ?? 5)) {
      return this.giveUp(new EngineStartError(`engine crashed ${this.restarts.length + 1} times within ${windowMs} ms (code ${code}, signal ${sig}): giving up`, code, sig, this.stderrTail.join("\n")));
    }
    const b = o.restartBackoffMs ?? {};
    const delay = Math.min(b.max ?? 5_000, (b.initial ?? 100) * 2 ** this.restarts.length);
    this.restarts.push(now);
    this.setState("restarting");
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this._state !== "restarting") return;
      this.spawnOnce().then(
        () => {
          if (this._state === "restarting") this.setState("running");
        },
        (e: Error) => {
          if (this._state === "restarting") this.giveUp(e);
        },
      );
    }, delay);
  }

  private giveUp(err: Error): void {
    this.setState("failed");
    this.failEndpointWaiters(err);
    void this.client.close(0);
    this.removeExitHooks();
    this.emit("failed", err);
  }

  private installExitHooks(): void {
    if (this.spawnOpts?.killOnExit === false || this.exitHooks) return;
    const killNow = () => {
      const c = this.child;
      if (c && c.exitCode === null && c.signalCode === null) {
        if (isWindows) killTree(c);
        else c.kill("SIGKILL");
      }
    };
    const onSignal = (sig: NodeJS.Signals) => {
      killNow();
      this.removeExitHooks();
      // We replaced Node's default action (exit); restore it when nobody else listens.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on("exit", killNow);
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    this.exitHooks = () => {
      process.off("exit", killNow);
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    };
  }

  private removeExitHooks(): void {
    this.exitHooks?.();
    this.exitHooks = null;
  }
}

function killTree(child: ChildProcess): void {
  if (child.pid !== undefined) spawnSync("taskkill", ["/PID", String(child.pid), "/T", "/F"], { windowsHide: true, stdio: "ignore" });
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      child.off("exit", on);
      resolve(false);
    }, ms);
    const on = () => {
      clearTimeout(t);
      resolve(true);
    };
    child.once("exit", on);
  });
}

/** Calls fn for every line of a stream, reading it to the end (never leaves a pipe unread). */
function lines(stream: NodeJS.ReadableStream, fn: (line: string) => void): void {
  let rest = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    rest += chunk;
    let nl: number;
    while ((nl = rest.indexOf("\n")) >= 0) {
      fn(rest.slice(0, nl).replace(/\r$/, ""));
      rest = rest.slice(nl + 1);
    }
    if (rest.length > 65_536) rest = rest.slice(-65_536); // a line without end: keep it bounded
  });
  stream.on("end", () => {
    if (rest) fn(rest);
    rest = "";
  });
}
