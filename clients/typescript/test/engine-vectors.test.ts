// The spec's negative vectors replayed against the real `signal` binary over a raw socket:
// data-driven, so it follows vectors.json when the spec changes codes or ref rules (issue 10).
import "./helpers";
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { spawn, type ChildProcess } from "node:child_process";
import { FrameReader, PREFACE, encodeCommand, parseAnnouncement, type Envelope } from "../src/index";
import { signalBinary, sleep, vectors, type Vector } from "./helpers";

const bin = signalBinary();
const skip = bin === null && process.env.LOOPHOLE_REQUIRE_SIGNAL !== "1" ? "signal binary not built (cargo build --release --example signal)" : false;
if (bin === null && !skip) throw new Error("LOOPHOLE_REQUIRE_SIGNAL=1 but target/release/examples/signal is missing");

let child: ChildProcess;
let port = 0;
// The analysis vectors (issue 14) need an engine that has taps. A `signal` built before issue 14
// has no `taps` in its welcome: those vectors are skipped, saying so; any engine that announces
// taps (0 included: it still checks the bodies) runs them all. A vector written for `taps` = N is re-encoded for the engine's own count.
let engineTaps: number | undefined;
before(async () => {
  if (skip) return;
  const env = { ...process.env };
  delete env.LOOPHOLE_SESSION_TOKEN;
  child = spawn(bin!, ["--no-rt"], { env, stdio: ["ignore", "pipe", "ignore"] });
  port = await new Promise<number>((resolve, reject) => {
    let buf = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      buf += d;
      const line = buf.split("\n").find((l) => l.startsWith("LOOPHOLE_LISTEN "));
      if (line) resolve(parseAnnouncement(line)!.port);
    });
    child.once("exit", (c) => reject(new Error(`signal exited ${c}`)));
  });
  const c = await established();
  engineTaps = typeof c.welcome.body.taps === "number" ? c.welcome.body.taps : undefined;
  c.sock.destroy();
  if (engineTaps === undefined && process.env.LOOPHOLE_REQUIRE_ANALYSIS === "1") throw new Error("LOOPHOLE_REQUIRE_ANALYSIS=1 but this signal has no taps in its welcome");
});
// (An older engine answers every scope/spectrum subscribe invalid_field: an unknown enum value.)
const needsTaps = (v: Vector) => v.taps !== undefined || ((v.json?.body?.stream === "scope" || v.json?.body?.stream === "spectrum") && v.error !== "invalid_field");

after(() => {
  if (!skip) child.kill("SIGKILL");
});

// A raw connection replaying the spec's negative vectors: data-driven, follows vectors.json.
async function raw(port: number): Promise<{ sock: net.Socket; next: (ms?: number) => Promise<Envelope | "closed" | "timeout">; send: (b: Buffer) => void; closed: () => boolean; preface: () => boolean }> {
  const sock = net.createConnection({ host: "127.0.0.1", port });
  await new Promise<void>((r, j) => sock.once("connect", r).once("error", j));
  const reader = new FrameReader();
  const queue: Envelope[] = [];
  let isClosed = false;
  let gotBytes = false;
  let wake: (() => void) | null = null;
  sock.on("data", (d) => {
    gotBytes = true;
    queue.push(...reader.push(d));
    wake?.();
  });
  sock.on("error", () => {});
  sock.on("close", () => {
    isClosed = true;
    wake?.();
  });
  const next = async (ms = 2000) => {
    const end = Date.now() + ms;
    while (queue.length === 0 && !isClosed && Date.now() < end) await new Promise<void>((r) => { wake = r; setTimeout(r, end - Date.now()); });
    wake = null;
    if (queue.length) return queue.shift()!;
    return isClosed ? "closed" : "timeout";
  };
  return { sock, next, send: (b) => sock.write(b), closed: () => isClosed, preface: () => gotBytes };
}

for (const v of vectors().filter((v) => v.kind === "negative")) {
  test(`engine answers negative vector ${v.name}: ${v.error ?? "silent close"}`, { skip }, async (t) => {
    if (needsTaps(v) && engineTaps === undefined) return t.skip("this signal predates analysis streams (its welcome has no `taps`)");
    const c = v.state === "established" ? await established() : await raw(port);
    try {
      if (v.state === "awaiting_hello") c.send(PREFACE);
      const wire = v.taps !== undefined && v.taps !== engineTaps ? encodeCommand(v.json.name, v.json.id, { ...v.json.body, tap: engineTaps }) : Buffer.from(v.hex, "hex");
      c.send(wire);
      if (v.error === null) {
        assert.equal(await c.next(), "closed");
        assert.equal(c.preface(), false, "nothing sent before closing");
        return;
      }
      let e = await c.next();
      while (e !== "closed" && e !== "timeout" && e.type === "telemetry") e = await c.next();
      assert.ok(e !== "closed" && e !== "timeout", `expected error ${v.error}, got ${e}`);
      assert.equal(e.type, "error");
      assert.equal(e.body.code, v.error);
      assert.equal(e.ref, v.ref ?? undefined);
      if (v.closes) assert.equal(await c.next(), "closed");
      else {
        c.send(encodeCommand("ping", 4321, { nonce: 9 }));
        let p = await c.next();
        while (p !== "closed" && p !== "timeout" && p.type === "telemetry") p = await c.next();
        assert.ok(p !== "closed" && p !== "timeout" && p.ref === 4321, "still open: the next command is answered");
      }
    } finally {
      c.sock.destroy();
    }
  });
}

/** A raw connection with an open session (retrying while the previous one is being freed). */
async function established() {
  for (let i = 0; i < 100; i++) {
    const c = await raw(port);
    c.send(Buffer.concat([PREFACE, encodeCommand("hello", 1, { protocol: 1, client: "vectors" })]));
    const w = await c.next();
    if (w !== "closed" && w !== "timeout" && w.name === "welcome") {
      for (let k = 0; k < 2; k++) await c.next(); // the snapshot: transport.state, engine.health
      return { ...c, welcome: w };
    }
    c.sock.destroy();
    await sleep(20); // session_busy: the engine has not yet noticed the previous close
  }
  throw new Error("no session");
}

