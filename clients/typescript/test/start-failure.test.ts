// start() when the engine cannot be reached or refuses: it settles, with the cause; `disconnected`
// names what happened and tells a connection never made from one that closed.
import "./helpers";
import { test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { EngineClient, EngineError, EngineSupervisor, FrameReader, PREFACE, ProtocolError, encodeFrame, type DisconnectInfo } from "../src/index";
import { sleep } from "./helpers";

/** A loopback port nobody listens on (connection refused). */
function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** A fake engine: `onHello(sock, id)` answers the hello; other commands are acked. */
async function engine(onHello: (sock: net.Socket, id: number) => void, port = 0) {
  const socks: net.Socket[] = [];
  const server = net.createServer((sock) => {
    socks.push(sock);
    const r = new FrameReader();
    sock.on("error", () => {});
    sock.on("data", (d) => {
      for (const e of r.push(d)) {
        if (e.name === "hello") onHello(sock, e.id!);
        else sock.write(encodeFrame(JSON.stringify({ type: "reply", name: e.name === "ping" ? "pong" : "ack", ref: e.id, body: e.name === "ping" ? { nonce: e.body.nonce, t_engine_us: 1 } : {} })));
      }
    });
  });
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  return {
    port: (server.address() as net.AddressInfo).port,
    socks,
    close: () => new Promise<void>((r) => {
      for (const s of socks) s.destroy();
      server.close(() => r());
    }),
  };
}
const welcome = (sock: net.Socket, id: number) =>
  sock.write(Buffer.concat([PREFACE, encodeFrame(JSON.stringify({ type: "reply", name: "welcome", ref: id, body: { protocol: 1, engine: "fake/0", instance: "abababababababab", sample_rate: 48000, block_size: 128, max_frame: 65536, heartbeat_ms: 1000, timeout_ms: 5000 } }))]));
const refuse = (code: string, message: string) => (sock: net.Socket, id: number) =>
  sock.end(Buffer.concat([PREFACE, encodeFrame(JSON.stringify({ type: "error", name: "error", ref: id, body: { code, message } }))]));

function watch(client: EngineClient) {
  const out: Array<{ reason: string; info: DisconnectInfo }> = [];
  client.on("disconnected", (reason, info) => out.push({ reason, info }));
  return out;
}

/** How start() settled within `ms`: the error, "ready", or "pending". */
function settled(p: Promise<unknown>, ms = 3_000): Promise<unknown> {
  return Promise.race([p.then(() => "ready", (e: unknown) => e), sleep(ms).then(() => "pending")]);
}

test("nothing listening, default options: start() retries for startTimeoutMs (3 s) and then rejects with the socket's error (connect ECONNREFUSED host:port), the client is failed, every disconnected says so with connected: false", async () => {
  const port = await closedPort();
  const client = new EngineClient({ port });
  const seen = watch(client);
  const t0 = Date.now();
  const e = await settled(client.start(), 8_000);
  const took = Date.now() - t0;
  assert.ok(e instanceof EngineError, `start() settled: ${String(e)}`);
  assert.equal(e.code, "not_sent");
  assert.equal(e.fromEngine, false);
  assert.match(e.message, new RegExp(`^not_sent: connect ECONNREFUSED 127\\.0\\.0\\.1:${port} \\(${seen.length} attempts in \\d+ ms\\)$`));
  assert.equal((e.cause as NodeJS.ErrnoException).code, "ECONNREFUSED");
  assert.ok(took <= 3_000 + 1_500, `settled within the budget: ${took} ms`);
  assert.ok(seen.length >= 2, `retried: ${seen.length}`);
  assert.equal(client.state, "failed");
  for (const s of seen) {
    assert.equal(s.reason, `connect ECONNREFUSED 127.0.0.1:${port}`);
    assert.equal(s.info.connected, false);
    assert.equal(s.info.session, false);
    assert.equal((s.info.cause as NodeJS.ErrnoException).code, "ECONNREFUSED");
  }
  // ready() and start() again: the same cause, not "client is failed".
  await assert.rejects(client.ready(), { message: e.message });
  await assert.rejects(client.start(), { message: e.message });
  await client.close();

  // startTimeoutMs: 0: one attempt, at once.
  const once = new EngineClient({ port }, { startTimeoutMs: 0 });
  const one = watch(once);
  const t1 = Date.now();
  await assert.rejects(once.start(), { code: "not_sent", message: `not_sent: connect ECONNREFUSED 127.0.0.1:${port}` });
  assert.ok(Date.now() - t1 < 1_000);
  assert.equal(one.length, 1);
});

test("control: a connection made and then closed by the engine reads `the engine closed the connection`, connected: true; after a session, losses are retried (reconnecting, ECONNREFUSED each time), not failed", async () => {
  // Closed in the handshake: connected, no session.
  const mute = await engine((sock) => sock.destroy());
  const early = new EngineClient({ port: mute.port }, { startTimeoutMs: 0 });
  const a = watch(early);
  const e = await settled(early.start());
  assert.ok(e instanceof EngineError && e.message === "not_sent: the engine closed the connection", String(e));
  assert.deepEqual(a.map((s) => [s.reason, s.info.connected, s.info.session]), [["the engine closed the connection", true, false]]);
  await mute.close();

  // A session, then the engine goes away: the client keeps trying (later reconnects follow `reconnect`).
  const ok = await engine(welcome);
  const client = new EngineClient({ port: ok.port }, { reconnect: { initialMs: 5, maxMs: 10 } });
  const b = watch(client);
  await client.start();
  await ok.close();
  for (let i = 0; i < 100 && b.length < 4; i++) await sleep(20);
  assert.equal(client.state, "reconnecting");
  assert.deepEqual([b[0]!.reason, b[0]!.info.connected, b[0]!.info.session], ["the engine closed the connection", true, true]);
  assert.ok(b.length >= 3, `retried: ${b.length}`);
  for (const s of b.slice(1)) {
    assert.equal(s.reason, `connect ECONNREFUSED 127.0.0.1:${ok.port}`);
    assert.equal(s.info.connected, false);
  }
  await client.close();
});

test("startTimeoutMs: attempts until it, then the rejection; maxAttempts still bounds them; Infinity waits for an engine that starts listening later; close() while waiting rejects with the last attempt's cause", async () => {
  const port = await closedPort();
  const short = new EngineClient({ port }, { startTimeoutMs: 200, reconnect: { initialMs: 5, maxMs: 10 } });
  const seen = watch(short);
  const t0 = Date.now();
  const e = await settled(short.start());
  assert.ok(e instanceof EngineError && e.message.startsWith(`not_sent: connect ECONNREFUSED 127.0.0.1:${port} (`), String(e));
  assert.ok(Date.now() - t0 < 1_500 && seen.length >= 3, `${seen.length} attempts in ${Date.now() - t0} ms`);
  assert.equal(short.state, "failed");
  const three = new EngineClient({ port }, { startTimeoutMs: Infinity, reconnect: { initialMs: 5, maxMs: 10, maxAttempts: 2 } });
  const n = watch(three);
  const x = await settled(three.start());
  assert.ok(x instanceof EngineError && /^not_sent: connect ECONNREFUSED /.test(x.message), String(x));
  assert.equal(n.length, 3, "the first attempt and 2 more");

  const patient = new EngineClient({ port }, { startTimeoutMs: Infinity, reconnect: { initialMs: 5, maxMs: 20 } });
  const tries = watch(patient);
  const started = patient.start();
  await sleep(100);
  assert.ok(tries.length >= 2 && tries.every((t) => !t.info.connected), `${tries.length} attempts`);
  const late = await engine(welcome, port);
  assert.equal(await settled(started), "ready");
  await patient.close();
  await late.close();

  const closedBefore = new EngineClient({ port }, { startTimeoutMs: Infinity, reconnect: { initialMs: 5, maxMs: 20 } });
  const waiting = closedBefore.start();
  await sleep(60);
  await closedBefore.close();
  const c = await settled(waiting);
  assert.ok(c instanceof EngineError, String(c));
  assert.equal(c.message, `not_sent: client closed before the first session (last attempt: connect ECONNREFUSED 127.0.0.1:${port})`);
  assert.equal((c.cause as NodeJS.ErrnoException).code, "ECONNREFUSED");
});

test("the engine refuses hello: start() rejects with the engine's code (bad_token: at once, default options; session_busy: after its retries) and message, fromEngine; control: with a welcome it resolves", async () => {
  for (const [code, message, opts] of [
    ["bad_token", "missing or wrong session token", {}],
    ["session_busy", "another client is connected", { startTimeoutMs: 0 }],
    ["session_busy", "another client is connected", { startTimeoutMs: 150, reconnect: { initialMs: 5, maxMs: 10 } }],
  ] as const) {
    const fake = await engine(refuse(code, message));
    const client = new EngineClient({ port: fake.port }, { token: "wrong", ...opts });
    const seen = watch(client);
    const t0 = Date.now();
    const e = await settled(client.start());
    assert.ok(e instanceof EngineError, String(e));
    assert.equal(e.code, code);
    assert.equal(e.fromEngine, true);
    const retried = "reconnect" in opts;
    if (retried) assert.match(e.message, new RegExp(`^${code}: ${message} \\(${seen.length} attempts in \\d+ ms\\)$`));
    else assert.equal(e.message, `${code}: ${message}`);
    assert.equal(client.state, "failed");
    assert.ok(retried ? seen.length >= 2 : seen.length === 1, `${seen.length} attempts`);
    if (code === "bad_token") assert.ok(Date.now() - t0 < 1_000, "no retry for a refusal no retry can heal");
    assert.match(seen[0]!.reason, new RegExp(`${code}: ${message}$`));
    assert.equal(seen[0]!.info.connected, true);
    await client.close();
    await fake.close();
  }
  const fake = await engine(welcome);
  const client = new EngineClient({ port: fake.port }, { token: "right" });
  await client.start();
  await client.close();
  await fake.close();
});

test("a protocol fault in the handshake: start() rejects not_sent naming it, the ProtocolError as cause", async () => {
  const fake = await engine((sock) => sock.write("HTTP/1.1 400 Bad Request\r\n\r\n"));
  const client = new EngineClient({ port: fake.port }, { startTimeoutMs: 0 });
  const e = await settled(client.start());
  assert.ok(e instanceof EngineError && /^not_sent: bad_preface: /.test(e.message), String(e));
  assert.ok(e.cause instanceof ProtocolError && e.cause.code === "bad_preface");
  await client.close();
  await fake.close();
});

test("supervisor, connect-only, a connection file that does not exist: start() rejects naming the file and the errno, disconnected fires; a file written while start() retries is read; an endpoint function that throws is reported the same way", async () => {
  const file = join(tmpdir(), `loophole-missing-${process.pid}-${Date.now()}.json`);
  const sup = new EngineSupervisor({ connect: { connectionFile: file }, client: { startTimeoutMs: 100, reconnect: { initialMs: 5, maxMs: 10 } } });
  const seen = watch(sup.client);
  const e = await settled(sup.start());
  assert.ok(e instanceof EngineError, String(e));
  assert.equal(e.code, "not_sent");
  assert.ok(e.message.includes(file) && e.message.includes("ENOENT"), e.message);
  assert.match(e.message, /^not_sent: no endpoint: cannot read connection file: ENOENT/);
  const cause = e.cause as NodeJS.ErrnoException;
  assert.equal(cause.code, "ENOENT");
  assert.equal(cause.path, file);
  assert.ok(seen.length >= 2, `${seen.length} attempts`);
  assert.equal(seen[0]!.info.connected, false);
  assert.ok(seen[0]!.reason.includes(file));
  assert.equal(sup.state, "stopped");

  // Default options: the file appears 300 ms after start() (an engine still starting): connected.
  const fake = await engine(welcome);
  const later = new EngineSupervisor({ connect: { connectionFile: file } });
  const started = settled(later.start());
  await sleep(300);
  writeFileSync(file, JSON.stringify({ host: "127.0.0.1", port: fake.port, pid: 1, protocol: 1, instance: "abababababababab" }));
  try {
    const got = await started;
    assert.ok(got === "ready", String(got));
  } finally {
    rmSync(file, { force: true });
    await later.stop();
    await fake.close();
  }

  const fn = new EngineClient(
    () => {
      throw new Error("no engine configured");
    },
    { startTimeoutMs: 0 },
  );
  const why = watch(fn);
  const f = await settled(fn.start());
  assert.ok(f instanceof EngineError && f.message === "not_sent: no endpoint: no engine configured", String(f));
  assert.deepEqual(why.map((w) => w.reason), ["no endpoint: no engine configured"]);
});

test("after close(), requests reject `client is closed` (while it closes: `client is closing`); a new client is `closed` and its requests say it is not started", async () => {
  const fresh = new EngineClient({ port: 1 });
  assert.equal(fresh.state, "closed");
  await assert.rejects(fresh.request("ping", { nonce: 1 }), { code: "not_sent", message: "not_sent: not connected (not started)" });
  const fake = await engine(welcome);
  const client = new EngineClient({ port: fake.port });
  await client.start();
  const closing = client.close(50);
  await assert.rejects(client.request("ping", { nonce: 1 }), { message: "not_sent: client is closing" });
  await closing;
  assert.equal(client.state, "closed");
  await assert.rejects(client.request("ping", { nonce: 2 }), { message: "not_sent: client is closed" });
  await fake.close();
});
