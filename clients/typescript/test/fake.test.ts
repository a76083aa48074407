// Failure paths against a scripted fake engine on loopback.
import "./helpers";
import { test, mock } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { execFile } from "node:child_process";
import { EngineClient, EngineError, FrameReader, PREFACE, encodeFrame, backoffDelay, type Envelope } from "../src/index";
import { sleep } from "./helpers";

const welcome = (ref: number, instance: string, extra: Record<string, unknown> = {}) =>
  encodeFrame(JSON.stringify({ type: "reply", name: "welcome", ref, body: { protocol: 1, engine: "fake/0", instance, sample_rate: 48000, block_size: 128, max_frame: 65536, heartbeat_ms: 1000, timeout_ms: 5000, ...extra } }));
const reply = (ref: number, name = "ack", body: Record<string, unknown> = {}) => encodeFrame(JSON.stringify({ type: "reply", name, ref, body }));
const error = (ref: number, code: string) => encodeFrame(JSON.stringify({ type: "error", name: "error", ref, body: { code, message: code } }));

interface Conn {
  sock: net.Socket;
  cmds: Envelope[];
  onCmd: (fn: (e: Envelope, c: Conn) => void) => void;
}
/** A fake engine: `script(conn)` runs for each connection after the client's preface; commands are parsed. */
async function fakeEngine(script: (c: Conn) => void, port = 0) {
  const conns: Conn[] = [];
  const server = net.createServer((sock) => {
    const r = new FrameReader(); // the client's stream starts with its preface too
    let handler: (e: Envelope, c: Conn) => void = () => {};
    const c: Conn = { sock, cmds: [], onCmd: (fn) => (handler = fn) };
    conns.push(c);
    sock.on("error", () => {});
    sock.on("data", (d) => {
      for (const e of r.push(d)) {
        c.cmds.push(e);
        handler(e, c);
      }
    });
    script(c);
  });
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  const addr = server.address() as net.AddressInfo;
  return { port: addr.port, conns, close: () => new Promise<void>((r) => { for (const c of conns) c.sock.destroy(); server.close(() => r()); }) };
}

/** A well-behaved engine: welcomes, acks everything (pong for ping). */
const normal = (instance: string) => (c: Conn) =>
  c.onCmd((e, c) => {
    if (e.name === "hello") c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, instance)]));
    else if (e.name === "ping") c.sock.write(reply(e.id!, "pong", { nonce: e.body.nonce, t_engine_us: 1 }));
    else c.sock.write(reply(e.id!));
  });

function reasons(client: EngineClient) {
  const out: string[] = [];
  client.on("disconnected", (r) => out.push(r));
  return out;
}

for (const [name, bytes, want] of [
  ["garbage preface", Buffer.from("HTTP/1.1 400 Bad Request\r\n\r\n"), /bad_preface/],
  ["oversized length", Buffer.concat([PREFACE, Buffer.from([0x00, 0x01, 0x00, 0x01, 0x01, 0, 0, 0])]), /frame_too_large/],
  ["bad header flags", Buffer.concat([PREFACE, Buffer.from([0, 0, 0, 2, 0x01, 0x01, 0, 0]), Buffer.from("{}")]), /bad_header/],
  ["invalid UTF-8 payload", Buffer.concat([PREFACE, Buffer.from([0, 0, 0, 3, 0x01, 0, 0, 0, 0x22, 0xff, 0x22])]), /invalid_utf8/],
] as const) {
  test(`${name}: the client drops the connection with a typed reason and the hello settles`, async () => {
    const fake = await fakeEngine((c) => c.onCmd(() => c.sock.write(bytes)));
    const client = new EngineClient({ port: fake.port }, { reconnect: false });
    const why = reasons(client);
    await assert.rejects(client.start(), (e: unknown) => e instanceof EngineError && e.code === "not_sent" && want.test(e.message));
    assert.equal(client.state, "failed");
    assert.match(why.join(" "), want);
    await fake.close();
  });
}

test("half-written frame then close: the pending request settles outcome_unknown", async () => {
  const fake = await fakeEngine((c) =>
    c.onCmd((e, c) => {
      if (e.name === "hello") c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "aaaaaaaaaaaaaaaa")]));
      else {
        const f = reply(e.id!);
        c.sock.end(f.subarray(0, f.length - 3)); // most of the answer, then EOF
      }
    }),
  );
  const client = new EngineClient({ port: fake.port }, { reconnect: false });
  await client.start();
  await assert.rejects(client.request("transport.play", {}), (e: unknown) => e instanceof EngineError && e.code === "outcome_unknown");
  await client.close();
  await fake.close();
});

test("an engine that never answers: timeout, abort; requests while not ready: not_sent; close settles the rest", async () => {
  const fake = await fakeEngine((c) =>
    c.onCmd((e, c) => {
      if (e.name === "hello") c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "bbbbbbbbbbbbbbbb")]));
    }),
  );
  const client = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false });
  await assert.rejects(client.request("transport.play", {}), (e: unknown) => e instanceof EngineError && e.code === "not_sent");
  await client.start();
  await assert.rejects(client.request("transport.play", {}, { timeoutMs: 50 }), (e: unknown) => e instanceof EngineError && e.code === "timeout");
  const ac = new AbortController();
  const p = client.request("transport.stop", {}, { signal: ac.signal });
  ac.abort();
  await assert.rejects(p, (e: unknown) => e instanceof EngineError && e.code === "aborted");
  const pre = new AbortController();
  pre.abort();
  await assert.rejects(client.request("transport.stop", {}, { signal: pre.signal }), (e: unknown) => e instanceof EngineError && e.code === "aborted");
  const owed = client.request("transport.seek", { sample: 1 }, { timeoutMs: 0 });
  await sleep(10);
  assert.equal(client.inFlight, 1);
  await client.close(50);
  await assert.rejects(owed, (e: unknown) => e instanceof EngineError && e.code === "outcome_unknown");
  await assert.rejects(client.request("transport.play", {}), (e: unknown) => e instanceof EngineError && e.code === "not_sent");
  assert.equal(client.inFlight, 0);
  await fake.close();
});

test("engine errors reject with the engine's code, unknown codes included", async () => {
  const fake = await fakeEngine((c) =>
    c.onCmd((e, c) => {
      if (e.name === "hello") c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "cccccccccccccccc")]));
      else c.sock.write(error(e.id!, e.name === "transport.play" ? "unknown_node" : "code_from_the_future"));
    }),
  );
  const client = new EngineClient({ port: fake.port }, { reconnect: false });
  await client.start();
  await assert.rejects(client.request("transport.play", {}), (e: unknown) => e instanceof EngineError && e.code === "unknown_node" && e.fromEngine);
  await assert.rejects(client.request("transport.stop", {}), (e: unknown) => e instanceof EngineError && e.code === "code_from_the_future");
  await client.close();
  await fake.close();
});

test("engine restart with a new instance: engineRestarted, re-subscribe, no replay of the lost command", async () => {
  let instance = "1111111111111111";
  const fake = await fakeEngine((c) =>
    c.onCmd((e, c) => {
      if (e.name === "hello") c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, instance)]));
      else if (e.name === "transport.play") c.sock.destroy(); // dies with this command unanswered
      else c.sock.write(reply(e.id!));
    }),
  );
  const client = new EngineClient({ port: fake.port }, { reconnect: { initialMs: 5, maxMs: 20 } });
  await client.start();
  await client.subscribe("meters", 30);
  const restarted = new Promise<[string, string]>((r) => client.once("engineRestarted", (a, b) => r([a, b])));
  instance = "2222222222222222";
  await assert.rejects(client.request("transport.play", {}), (e: unknown) => e instanceof EngineError && e.code === "outcome_unknown");
  assert.deepEqual(await restarted, ["2222222222222222", "1111111111111111"]);
  await client.ready();
  await sleep(20);
  const second = fake.conns[1]!;
  assert.deepEqual(second.cmds.map((e) => e.name), ["hello", "telemetry.subscribe"], "re-subscribed, play not replayed");
  assert.deepEqual(second.cmds[1]!.body, { stream: "meters", rate_hz: 30 });
  // Same instance again: a reconnect, not a restart.
  let again = 0;
  client.on("engineRestarted", () => again++);
  second.sock.destroy();
  await sleep(5);
  await client.ready();
  assert.equal(again, 0);
  await client.close();
  await fake.close();
});

test("ids are u32 and wrap at 2^32", async () => {
  const fake = await fakeEngine(normal("dddddddddddddddd"));
  const client = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false });
  await client.start();
  (client as any).nextId = 2 ** 32 - 2;
  for (let i = 0; i < 3; i++) await client.request("transport.play", {});
  assert.deepEqual(fake.conns[0]!.cmds.slice(-3).map((e) => e.id), [4294967294, 4294967295, 0]);
  await client.close();
  await fake.close();
});

test("slow reader: in-flight stays bounded, write() backpressure is respected, everything settles", async () => {
  let paused: Conn | null = null;
  const fake = await fakeEngine((c) =>
    c.onCmd((e, c) => {
      if (e.name === "hello") {
        c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "eeeeeeeeeeeeeeee")]));
        if (paused) return; // only the first connection reads slowly
        paused = c;
        setImmediate(() => c.sock.pause()); // stop reading: TCP fills up
      } else c.sock.write(reply(e.id!));
    }),
  );
  const client = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false, maxInFlight: 64, requestTimeoutMs: 0 });
  await client.start();
  await sleep(10);
  const big = "x".repeat(3000);
  const all = Array.from({ length: 2000 }, () => client.request("graph.add_node", { node: 1, kind: big }));
  let settled = 0;
  for (const p of all) p.then(() => settled++, () => settled++);
  await sleep(100);
  assert.ok(client.inFlight <= 64, `in flight ${client.inFlight}`);
  assert.ok(client.queued > 1900, `the rest waits in the client, unsent: ${client.queued}`);
  const sock = (client as any).sock as net.Socket;
  assert.ok(sock.writableLength < 64 * 3100, `socket buffer bounded by the in-flight cap: ${sock.writableLength}`);
  assert.equal(settled, 0);
  paused!.sock.resume();
  await Promise.all(all);
  assert.equal(settled, 2000);
  // onFull "reject": over the bound a request fails at once instead of waiting.
  const strict = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false, maxInFlight: 1, onFull: "reject" });
  await client.close();
  await strict.start();
  const first = strict.request("transport.play", {});
  await assert.rejects(strict.request("transport.play", {}), (e: unknown) => e instanceof EngineError && e.code === "not_sent");
  await first;
  await strict.close();
  await fake.close();
});

test("opt-in queue while disconnected: bounded, sent once the session is ready", async () => {
  const fake = await fakeEngine(normal("ffffffffffffffff"));
  const client = new EngineClient({ port: fake.port }, { reconnect: false, queueWhileDisconnected: 2 });
  const a = client.request("transport.play", {});
  const b = client.request("transport.stop", {});
  await assert.rejects(client.request("transport.play", {}), (e: unknown) => e instanceof EngineError && e.code === "not_sent");
  await client.start();
  await Promise.all([a, b]);
  await client.close();
  await fake.close();
});

test("backoff: full jitter within the exponential ceiling, capped", () => {
  assert.equal(backoffDelay(0, { initialMs: 100 }, () => 0.999), 99);
  assert.equal(backoffDelay(3, { initialMs: 100 }, () => 0.5), 400);
  assert.equal(backoffDelay(20, { initialMs: 100, maxMs: 5000 }, () => 0.5), 2500);
  assert.equal(backoffDelay(5, {}, () => 0), 0);
});

test("reconnect timing follows the backoff (mock timers)", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    let calls = 0;
    const client = new EngineClient(
      () => {
        calls++;
        throw new Error("no engine yet");
      },
      { reconnect: { initialMs: 100, maxMs: 1000 }, random: () => 0.5 },
    );
    const ready = client.start().catch((e: EngineError) => e.code);
    const flush = async () => {
      for (let i = 0; i < 5; i++) await Promise.resolve();
    };
    await flush();
    assert.equal(calls, 1);
    // Delays: 50, 100, 200, 400, 500 (capped: 0.5 × 1000).
    for (const d of [50, 100, 200, 400, 500, 500]) {
      mock.timers.tick(d - 1);
      await flush();
      const callsBefore: number = calls;
      mock.timers.tick(1);
      await flush();
      assert.equal(calls, callsBefore + 1, `attempt after ${d} ms`);
    }
    await client.close();
    assert.equal(await ready, "not_sent");
  } finally {
    mock.timers.reset();
  }
});

test("heartbeat: pings when idle, declares the engine gone when a pong is timeout_ms late (mock timers)", async () => {
  let answerPings = true;
  const fake = await fakeEngine((c) =>
    c.onCmd((e, c) => {
      if (e.name === "hello") c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "9999999999999999", { heartbeat_ms: 1000, timeout_ms: 3000 })]));
      else if (e.name === "ping" && answerPings) c.sock.write(reply(e.id!, "pong", { nonce: e.body.nonce, t_engine_us: 1 }));
    }),
  );
  mock.timers.enable({ apis: ["setInterval", "Date"] });
  try {
    const client = new EngineClient({ port: fake.port }, { reconnect: false });
    const why = reasons(client);
    await client.start();
    const pings = () => fake.conns[0]!.cmds.filter((e) => e.name === "ping").length;
    mock.timers.tick(400);
    await sleep(20);
    assert.equal(pings(), 0, "no ping before heartbeat_ms/2 of idleness");
    for (let i = 0; i < 6; i++) {
      mock.timers.tick(500);
      await sleep(20);
    }
    const n = pings();
    assert.ok(n >= 3 && n <= 7, `about one ping per heartbeat_ms: ${n}`);
    assert.equal(client.state, "ready", "answered pings keep the session");
    answerPings = false;
    for (let i = 0; i < 6; i++) {
      mock.timers.tick(500);
      await sleep(20);
    }
    assert.equal(client.state, "ready", "not yet: the oldest unanswered ping is < timeout_ms old");
    for (let i = 0; i < 4; i++) {
      mock.timers.tick(500);
      await sleep(20);
    }
    assert.equal(client.state, "failed");
    assert.match(why.join(" "), /engine silent/);
  } finally {
    mock.timers.reset();
    await fake.close();
  }
});

test("unref(): a connected client does not keep the process alive", async () => {
  const { spawn } = await import("node:child_process");
  const fake = await fakeEngine(normal("abababababababab"));
  const run = (code: string, ms: number) =>
    new Promise<{ out: string; code: number | null; killed: boolean }>((resolve) => {
      // Async spawn: the fake engine lives in this process and must keep answering.
      const ch = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      let killed = false;
      ch.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
      const t = setTimeout(() => {
        killed = true;
        ch.kill("SIGKILL");
      }, ms);
      ch.on("exit", (code) => {
        clearTimeout(t);
        resolve({ out, code, killed });
      });
    });
  const code = `const {EngineClient}=require(${JSON.stringify(require.resolve("../src/index"))});
    const c=new EngineClient({port:${fake.port}});c.start().then(()=>{c.unref();console.log("ready");});`;
  const r = await run(code, 5000);
  assert.equal(r.out.trim(), "ready");
  assert.equal(r.killed, false, "exited on its own");
  assert.equal(r.code, 0);
  // Negative control: without unref() the same script is still running after 1.5 s.
  const held = await run(code.replace("c.unref();", ""), 1500);
  assert.equal(held.out.trim(), "ready");
  assert.equal(held.killed, true);
  await fake.close();
});

test("engine stopping (errors.md shutting_down): commands not carried out settle shutting_down, then goodbye, no hang", async () => {
  // session.md §7 (Shutdown): the engine answers what it received but did not hand over with
  // `error shutting_down` (ref set), sends `goodbye` `shutdown` and closes.
  let n = 0;
  const fake = await fakeEngine((c) =>
    c.onCmd((e, c) => {
      if (e.name === "hello") return void c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "dddddddddddddddd")]));
      if (++n === 1) return void c.sock.write(reply(e.id!));
      c.sock.write(error(e.id!, "shutting_down"));
      if (n === 3) c.sock.end(encodeFrame(JSON.stringify({ type: "error", name: "goodbye", body: { reason: "shutdown" } })));
    }),
  );
  const client = new EngineClient({ port: fake.port }, { reconnect: false });
  const goodbyes: string[] = [];
  client.on("goodbye", (g) => goodbyes.push(g.reason));
  await client.start();
  const results = await Promise.allSettled([1, 2, 3].map((v) => client.request("param.set", { node: 2, param: 0, value: v / 10 })));
  assert.equal(results[0]!.status, "fulfilled");
  for (const r of results.slice(1)) {
    assert.equal(r.status, "rejected");
    const e = (r as PromiseRejectedResult).reason;
    assert.ok(e instanceof EngineError && e.code === "shutting_down" && e.fromEngine, String(e));
  }
  await sleep(50);
  assert.deepEqual(goodbyes, ["shutdown"]);
  assert.equal(client.inFlight, 0);
  await client.close();
  await fake.close();
});

test("an error frame whose message is not a string ({toString: 1}, a number, null) rejects with the engine's code; nothing is thrown, the session goes on", { timeout: 10_000 }, async () => {
  const messages: unknown[] = [{ toString: 1 }, { toString: 1, valueOf: 1 }, 42, null, ["x"]];
  let n = 0;
  const fake = await fakeEngine((c) =>
    c.onCmd((e, c) => {
      if (e.name === "hello") return void c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "1212121212121212")]));
      if (e.name !== "transport.play") return void c.sock.write(reply(e.id!));
      c.sock.write(encodeFrame(JSON.stringify({ type: "error", name: "error", ref: e.id!, body: { code: "unknown_node", message: messages[n++] } })));
    }),
  );
  const client = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false });
  const why = reasons(client);
  await client.start();
  for (const m of messages) {
    await assert.rejects(client.request("transport.play", {}, { timeoutMs: 2_000 }), (e: unknown) => e instanceof EngineError && e.code === "unknown_node" && e.fromEngine && e.message === "unknown_node: ", `message ${JSON.stringify(m)}`);
  }
  await client.request("transport.stop", {}); // control: the same session still answers
  assert.equal(client.state, "ready");
  assert.deepEqual(why, []);
  await client.close();
  await fake.close();
});

test("a welcome whose heartbeat_ms, timeout_ms, instance or max_frame has the wrong JSON type, or a max_frame out of 64..=16777216: invalid_envelope, a clean close, nothing thrown (control: the same welcome, fixed, is ready, also at both ends of the range)", { timeout: 10_000 }, async () => {
  const odd = { toString: 1, valueOf: 1 }; // any arithmetic or String() on it throws a TypeError
  for (const [field, value] of [["heartbeat_ms", odd], ["timeout_ms", odd], ["heartbeat_ms", "1000"], ["timeout_ms", -1], ["instance", odd], ["instance", 7], ["max_frame", 63], ["max_frame", 16_777_217], ["max_frame", "65536"], ["max_frame", undefined], [null, null], ["max_frame", 64], ["max_frame", 16_777_216]] as const) {
    const fine = field === null || (field === "max_frame" && (value === 64 || value === 16_777_216));
    const fake = await fakeEngine((c) =>
      c.onCmd((e, c) => {
        if (e.name === "hello") c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "3434343434343434", field === null ? { heartbeat_ms: 40, timeout_ms: 60 } : { heartbeat_ms: 40, timeout_ms: 60, [field]: value })]));
        // Pings unanswered: a timeout_ms the client cannot compare would throw from its timer.
      }),
    );
    const client = new EngineClient({ port: fake.port }, { reconnect: false });
    const why = reasons(client);
    try {
      if (fine) {
        await client.start();
        await client.close(50);
      } else {
        await assert.rejects(client.start(), (e: unknown) => e instanceof EngineError && e.code === "not_sent", `${field} ${JSON.stringify(value)}`);
        assert.equal(client.state, "failed");
        assert.match(why.join(" "), new RegExp(`^invalid_envelope: welcome\\.${field} `));
      }
      await sleep(150); // longer than timeout_ms: a heartbeat timer left behind would fire
    } finally {
      if (client.state !== "failed" && client.state !== "closed") await client.close(0);
      await fake.close();
    }
  }
});

test("close(): answers owed when the goodbye ack arrives still settle with their answers (envelope.md: the ack of goodbye may come before audio-route answers)", { timeout: 10_000 }, async () => {
  const held: number[] = [];
  const fake = await fakeEngine((c) =>
    c.onCmd((e, c) => {
      if (e.name === "hello") return void c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "5656565656565656")]));
      if (e.name === "goodbye") {
        // net route first, then the audio route's answers (session.md §7), then the close.
        c.sock.write(reply(e.id!));
        setTimeout(() => c.sock.end(Buffer.concat(held.map((id) => reply(id, "ack", { sample: 480 })))), 30);
        return;
      }
      held.push(e.id!);
    }),
  );
  try {
    const client = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false });
    await client.start();
    const owed = [client.request("param.set", { node: 2, param: 0, value: 0.5 }), client.request("transport.play", {})];
    await sleep(20);
    assert.equal(client.inFlight, 2);
    const t0 = Date.now();
    await Promise.all([client.close(2_000), client.close(2_000)]); // twice: both end with the session, neither waits out its timeout
    assert.ok(Date.now() - t0 < 1_000, `close() took ${Date.now() - t0} ms`);
    const results = await Promise.allSettled(owed);
    assert.deepEqual(results.map((r) => (r.status === "fulfilled" ? r.value.sample : String((r as PromiseRejectedResult).reason))), [480, 480]);
    assert.equal(client.state, "closed");
  } finally {
    await fake.close();
  }
});

test("close(): an engine that closes instead of answering goodbye ends close() at once, owed requests settle outcome_unknown; close(0) does not wait at all", { timeout: 10_000 }, async () => {
  for (const mode of ["destroy", "silent"] as const) {
    const fake = await fakeEngine((c) =>
      c.onCmd((e, c) => {
        if (e.name === "hello") return void c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "7878787878787878")]));
        if (e.name === "goodbye" && mode === "destroy") c.sock.destroy(); // crashed mid-answer
        // "silent": a hung engine, socket open, nothing answered
      }),
    );
    try {
      const client = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false });
      await client.start();
      const owed = client.request("transport.play", {}, { timeoutMs: 0 });
      owed.catch(() => {}); // asserted below; handled now so a failed assertion is not also an unhandled rejection
      await sleep(20);
      const t0 = Date.now();
      // Raced against a deadline so that a close() that never returns fails the test, not hangs it.
      const ended = await Promise.race([client.close(mode === "destroy" ? 5_000 : 0).then(() => true), sleep(2_000).then(() => false)]);
      const took = Date.now() - t0;
      assert.ok(ended && took < 1_000, `${mode}: close() ${ended ? `took ${took} ms` : "had not returned after 2 s"}`);
      await assert.rejects(owed, (e: unknown) => e instanceof EngineError && e.code === "outcome_unknown");
      assert.equal(client.state, "closed");
    } finally {
      await fake.close();
    }
  }
});

test("telemetry iterator: next() called again before the first settled: each call gets its own frame, and return() ends every one (none left pending)", { timeout: 10_000 }, async () => {
  const meters = (peak: number) => encodeFrame(JSON.stringify({ type: "telemetry", name: "meters", body: { peak: [peak], rms: [peak] } }));
  const fake = await fakeEngine((c) =>
    c.onCmd((e, c) => {
      if (e.name === "hello") return void c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "9a9a9a9a9a9a9a9a")]));
      c.sock.write(reply(e.id!));
      if (e.name === "telemetry.subscribe") setTimeout(() => c.sock.write(meters(0.5)), 20).unref();
      if (e.name === "ping") setTimeout(() => c.sock.write(meters(0.25)), 20).unref();
    }),
  );
  const client = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false });
  try {
    await client.start();
    const it = client.telemetry("meters");
    const settled = (p: Promise<IteratorResult<{ peak: number[] }>>) => Promise.race([p.then((r) => (r.done ? "done" : r.value.peak[0])), sleep(1_000).then(() => "pending")]);
    const a = it.next();
    const b = it.next();
    await client.subscribe("meters", 10);
    assert.equal(await settled(a), 0.5, "the first frame goes to the first call");
    await client.request("ping", { nonce: 1 });
    assert.equal(await settled(b), 0.25, "the second frame to the second call");
    const c = it.next();
    const d = it.next();
    await it.return!();
    assert.deepEqual([await settled(c), await settled(d)], ["done", "done"]);
  } finally {
    await client.close();
    await fake.close();
  }
});

test("an error answer that arrives after its request timed out is ignored like a late reply, not emitted as engineError (which is for errors without ref); control: one without ref is", { timeout: 10_000 }, async () => {
  const fake = await fakeEngine((c) =>
    c.onCmd((e, c) => {
      if (e.name === "hello") return void c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "bcbcbcbcbcbcbcbc")]));
      if (e.name === "transport.play") setTimeout(() => c.sock.write(error(e.id!, "audio_unavailable")), 80).unref(); // late
      else if (e.name === "transport.stop") c.sock.write(Buffer.concat([encodeFrame(JSON.stringify({ type: "error", name: "error", body: { code: "invalid_json", message: "no ref" } })), reply(e.id!)]));
      else c.sock.write(reply(e.id!));
    }),
  );
  const client = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false });
  const diagnostics: string[] = [];
  client.on("engineError", (b) => diagnostics.push(b.code));
  try {
    await client.start();
    await assert.rejects(client.request("transport.play", {}, { timeoutMs: 20 }), (e: unknown) => e instanceof EngineError && e.code === "timeout");
    await sleep(150); // the late error has arrived
    await client.request("transport.stop", {});
    assert.deepEqual(diagnostics, ["invalid_json"]);
  } finally {
    await client.close();
    await fake.close();
  }
});

test("a subscribe answered shutting_down (the session ended before it was carried out, errors.md) is kept and re-sent in the next session, and is no subscriptionFailed; control: a refusal (out_of_range) forgets it", { timeout: 10_000 }, async () => {
  const goodbye = encodeFrame(JSON.stringify({ type: "error", name: "goodbye", body: { reason: "shutdown" } }));
  let conn = 0;
  const fake = await fakeEngine((c) => {
    const n = conn++;
    c.onCmd((e, c) => {
      if (e.name === "hello") return void c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, `${n}`.repeat(16))]));
      if (e.name === "telemetry.subscribe" && n < 2) return void c.sock.end(Buffer.concat([error(e.id!, "shutting_down"), goodbye])); // 0: the first subscribe, 1: the re-sent one
      if (e.name === "telemetry.subscribe" && e.body.stream === "engine.health") return void c.sock.write(error(e.id!, "out_of_range"));
      c.sock.write(reply(e.id!));
    });
  });
  const client = new EngineClient({ port: fake.port }, { heartbeat: false, reconnect: { initialMs: 5, maxMs: 10 } });
  const failed: string[] = [];
  client.on("subscriptionFailed", (s, _t, e) => failed.push(`${s} ${e.code}`));
  try {
    await client.start();
    await assert.rejects(client.subscribe("meters", 10), (e: unknown) => e instanceof EngineError && e.code === "shutting_down");
    for (let i = 0; i < 200 && (fake.conns.length < 3 || client.state !== "ready"); i++) await sleep(10);
    await sleep(50);
    const subs = fake.conns.map((c) => c.cmds.filter((e) => e.name === "telemetry.subscribe").map((e) => e.body.stream));
    assert.deepEqual(subs, [["meters"], ["meters"], ["meters"]], "sent, re-sent after the first shutdown, and again after the second");
    assert.deepEqual(failed, []);
    await assert.rejects(client.subscribe("engine.health", 500), (e: unknown) => e instanceof EngineError && e.code === "out_of_range");
    assert.deepEqual((client as any).subs.has("engine.health"), false, "control: a real refusal is forgotten");
  } finally {
    await client.close();
    await fake.close();
  }
});

test("a listener that throws surfaces as an uncaught exception, but the frames after it in the same chunk are still dispatched: the answer behind it settles its request", { timeout: 20_000 }, async () => {
  const meters = encodeFrame(JSON.stringify({ type: "telemetry", name: "meters", body: { peak: [1], rms: [1] } }));
  const fake = await fakeEngine((c) =>
    c.onCmd((e, c) => {
      if (e.name === "hello") return void c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "dededededededede")]));
      c.sock.write(Buffer.concat([meters, reply(e.id!, "ack", { sample: 7 })])); // one write: one chunk on loopback
    }),
  );
  try {
    // In a child process: the test runner counts any uncaught exception in its own as a failure.
    const script = `
      const { EngineClient } = require(${JSON.stringify(require.resolve("../src/index"))});
      const uncaught = [];
      process.on("uncaughtException", (e) => uncaught.push(e.message));
      (async () => {
        const client = new EngineClient({ port: ${fake.port} }, { reconnect: false, heartbeat: false });
        await client.start();
        client.onTelemetry("meters", () => { throw new Error("listener bug"); });
        const got = await Promise.race([client.request("transport.play", {}, { timeoutMs: 0 }).then((b) => b.sample), new Promise((r) => setTimeout(() => r("no settlement within 1 s"), 1000))]);
        console.log(JSON.stringify({ got, uncaught }));
        await client.close(0);
        process.exit(0);
      })();`;
    const out = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, ["-e", script], { timeout: 15_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
    });
    assert.deepEqual(JSON.parse(out.trim().split("\n").pop()!), { got: 7, uncaught: ["listener bug"] }, "the answer settles; the listener's error is not swallowed");
  } finally {
    await fake.close();
  }
});

test("heartbeat: an engine that stops answering while the client keeps sending commands is declared gone within about timeout_ms (pings go out when nothing is received, not only when nothing is written)", { timeout: 10_000 }, async () => {
  const fake = await fakeEngine((c) =>
    c.onCmd((e, c) => {
      // Frozen after the handshake: reads (the socket stays open), answers nothing.
      if (e.name === "hello") c.sock.write(Buffer.concat([PREFACE, welcome(e.id!, "efefefefefefefef", { heartbeat_ms: 40, timeout_ms: 150 })]));
    }),
  );
  const client = new EngineClient({ port: fake.port }, { reconnect: false });
  const why = reasons(client);
  try {
    await client.start();
    const t0 = Date.now();
    // A UI dragging a slider: a command every 10 ms, each with its own (long) timeout.
    while (client.state === "ready" && Date.now() - t0 < 1_500) {
      client.request("param.set", { node: 2, param: 0, value: 0.5 }, { timeoutMs: 0 }).catch(() => {});
      await sleep(10);
    }
    assert.equal(client.state, "failed", `still ${client.state} after ${Date.now() - t0} ms of unanswered commands`);
    assert.match(why.join(" "), /engine silent/);
    assert.equal(client.inFlight, 0, "the commands it owed settled");
  } finally {
    await client.close();
    await fake.close();
  }
});

test("start() not awaited (fire and forget, state watched instead): its rejection when the client fails is handled, no unhandledRejection; awaited, it still rejects", { timeout: 20_000 }, async () => {
  const closed = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port)); // nobody listens there any more: connection refused
    });
  });
  // In a child process: this test file treats any unhandled rejection as fatal (helpers.ts).
  const script = `
    const { EngineClient } = require(${JSON.stringify(require.resolve("../src/index"))});
    const unhandled = [];
    process.on("unhandledRejection", (r) => unhandled.push(String(r)));
    const c = new EngineClient({ port: ${closed} }, { reconnect: false });
    c.start(); // not awaited
    const d = new EngineClient({ port: ${closed} }, { reconnect: false });
    d.start().then(() => "ready", (e) => e.code).then((awaited) => setTimeout(() => {
      console.log(JSON.stringify({ state: c.state, awaited, unhandled }));
    }, 100));`;
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ["-e", script], { timeout: 15_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
  assert.deepEqual(JSON.parse(out.trim().split("\n").pop()!), { state: "failed", awaited: "not_sent", unhandled: [] });
});
