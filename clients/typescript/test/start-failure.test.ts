// start() when the engine cannot be reached or refuses: it settles, with the cause; `disconnected`
// names what happened and tells a connection never made from one that closed.
import "./helpers";
import { test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
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

test("nothing listening, default options: start() rejects at once with the socket's error (connect ECONNREFUSED host:port), the client is failed, disconnected says so and connected: false", async () => {
  const port = await closedPort();
  const client = new EngineClient({ port });
  const seen = watch(client);
  const t0 = Date.now();
  const e = await settled(client.start());
  assert.ok(e instanceof EngineError, `start() settled: ${String(e)}`);
  assert.equal(e.code, "not_sent");
  assert.equal(e.fromEngine, false);
  assert.equal(e.message, `not_sent: connect ECONNREFUSED 127.0.0.1:${port}`);
  assert.equal((e.cause as NodeJS.ErrnoException).code, "ECONNREFUSED");
  assert.ok(Date.now() - t0 < 2_000, "no retry loop first");
  assert.equal(client.state, "failed");
  assert.deepEqual(seen.map((s) => s.reason), [`connect ECONNREFUSED 127.0.0.1:${port}`]);
  assert.equal(seen[0]!.info.connected, false);
  assert.equal(seen[0]!.info.session, false);
  assert.equal((seen[0]!.info.cause as NodeJS.ErrnoException).code, "ECONNREFUSED");
  // ready() and start() again: the same cause, not "client is failed".
  await assert.rejects(client.ready(), { message: `not_sent: connect ECONNREFUSED 127.0.0.1:${port}` });
  await assert.rejects(client.start(), { message: `not_sent: connect ECONNREFUSED 127.0.0.1:${port}` });
  await client.close();
});

test("control: a connection made and then closed by the engine reads `the engine closed the connection`, connected: true; after a session, losses are retried (reconnecting, ECONNREFUSED each time), not failed", async () => {
  // Closed in the handshake: connected, no session.
  const mute = await engine((sock) => sock.destroy());
  const early = new EngineClient({ port: mute.port });
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

test("startAttempts: N attempts then the rejection; Infinity waits for an engine that starts listening later; close() while waiting rejects with the last attempt's cause", async () => {
  const port = await closedPort();
  const three = new EngineClient({ port }, { startAttempts: 3, reconnect: { initialMs: 5, maxMs: 10 } });
  const seen = watch(three);
  const e = await settled(three.start());
  assert.ok(e instanceof EngineError && e.message === `not_sent: connect ECONNREFUSED 127.0.0.1:${port}`, String(e));
  assert.equal(seen.length, 3);
  assert.equal(three.state, "failed");

  const patient = new EngineClient({ port }, { startAttempts: Infinity, reconnect: { initialMs: 5, maxMs: 20 } });
  const tries = watch(patient);
  const started = patient.start();
  await sleep(100);
  assert.ok(tries.length >= 2 && tries.every((t) => !t.info.connected), `${tries.length} attempts`);
  const late = await engine(welcome, port);
  assert.equal(await settled(started), "ready");
  await patient.close();
  await late.close();

  const closedBefore = new EngineClient({ port }, { startAttempts: Infinity, reconnect: { initialMs: 5, maxMs: 20 } });
  const waiting = closedBefore.start();
  await sleep(60);
  await closedBefore.close();
  const c = await settled(waiting);
  assert.ok(c instanceof EngineError, String(c));
  assert.equal(c.message, `not_sent: client closed before the first session (last attempt: connect ECONNREFUSED 127.0.0.1:${port})`);
  assert.equal((c.cause as NodeJS.ErrnoException).code, "ECONNREFUSED");
});

test("the engine refuses hello: start() rejects with the engine's code (bad_token, fromEngine) and message, also for session_busy; control: with a welcome it resolves", async () => {
  for (const [code, message] of [["bad_token", "missing or wrong session token"], ["session_busy", "another client is connected"]] as const) {
    const fake = await engine(refuse(code, message));
    const client = new EngineClient({ port: fake.port }, { token: "wrong" });
    const seen = watch(client);
    const e = await settled(client.start());
    assert.ok(e instanceof EngineError, String(e));
    assert.equal(e.code, code);
    assert.equal(e.fromEngine, true);
    assert.equal(e.message, `${code}: ${message}`);
    assert.equal(client.state, "failed");
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
  const client = new EngineClient({ port: fake.port });
  const e = await settled(client.start());
  assert.ok(e instanceof EngineError && /^not_sent: bad_preface: /.test(e.message), String(e));
  assert.ok(e.cause instanceof ProtocolError && e.cause.code === "bad_preface");
  await client.close();
  await fake.close();
});

test("supervisor, connect-only, a connection file that does not exist: start() rejects naming the file and the errno, disconnected fires; control: an unreadable endpoint function is reported the same way", async () => {
  const file = join(tmpdir(), `loophole-missing-${process.pid}-${Date.now()}.json`);
  const sup = new EngineSupervisor({ connect: { connectionFile: file } });
  const seen = watch(sup.client);
  const e = await settled(sup.start());
  assert.ok(e instanceof EngineError, String(e));
  assert.equal(e.code, "not_sent");
  assert.ok(e.message.includes(file) && e.message.includes("ENOENT"), e.message);
  assert.match(e.message, /^not_sent: no endpoint: cannot read connection file: ENOENT/);
  const cause = e.cause as NodeJS.ErrnoException;
  assert.equal(cause.code, "ENOENT");
  assert.equal(cause.path, file);
  assert.equal(seen.length, 1);
  assert.equal(seen[0]!.info.connected, false);
  assert.ok(seen[0]!.reason.includes(file));
  assert.equal(sup.state, "stopped");

  const fn = new EngineClient(() => {
    throw new Error("no engine configured");
  });
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
