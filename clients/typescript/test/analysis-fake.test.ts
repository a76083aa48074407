// The client side of analysis telemetry against a scripted fake engine: hello negotiation,
// (stream, tap) subscriptions across reconnects, typed scope/spectrum events in both encodings,
// and every attachment fault ending in a clean close with a precise reason (never a throw).
import "./helpers";
import { test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { EngineClient, EngineError, FrameReader, PREFACE, commandJson, encodeFrame, type Envelope, type ScopeFrame, type SpectrumFrame } from "../src/index";
import { attachmentFrame, sleep } from "./helpers";

process.on("uncaughtException", (e) => {
  // A throw out of a socket handler is what the client promises never to do.
  process.exitCode = 1;
  console.error("uncaughtException:", e);
});

const welcomeFrame = (ref: number, instance: string, extra: Record<string, unknown>) =>
  encodeFrame(JSON.stringify({ type: "reply", name: "welcome", ref, body: { protocol: 1, engine: "fake/0", instance, sample_rate: 48000, block_size: 128, max_frame: 65536, heartbeat_ms: 1000, timeout_ms: 5000, ...extra } }));
const reply = (ref: number, name = "ack", body: Record<string, unknown> = {}) => encodeFrame(JSON.stringify({ type: "reply", name, ref, body }));
const errorFrame = (ref: number, code: string) => encodeFrame(JSON.stringify({ type: "error", name: "error", ref, body: { code, message: code } }));

const scopeBody = (n: number) => ({ tap: 1, points: n, samples_per_point: 3, sample: 4800, missed: 0 });
const spectrumBody = (n: number) => ({ tap: 0, bins: n, sample_rate: 48000, sample: 4800, missed: 0 });
const f32 = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => (i + 1) * k * 0.0625);

interface Conn {
  sock: net.Socket;
  cmds: Envelope[];
}
type Script = (e: Envelope, c: Conn, index: number) => void;

/** A fake engine; `script` sees every command of every connection (index = connection number). */
async function fakeEngine(script: Script) {
  const conns: Conn[] = [];
  const server = net.createServer((sock) => {
    const r = new FrameReader();
    const c: Conn = { sock, cmds: [] };
    const index = conns.push(c) - 1;
    sock.on("error", () => {});
    sock.on("data", (d) => {
      for (const e of r.push(d)) {
        c.cmds.push(e);
        script(e, c, index);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as net.AddressInfo).port,
    conns,
    close: () => new Promise<void>((r) => { for (const c of conns) c.sock.destroy(); server.close(() => r()); }),
  };
}

/** Welcomes (attachments as asked when `grant`), acks the rest, and runs `extra` after each ack. */
const engine = (opts: { grant?: boolean; taps?: number; instance?: string; onCmd?: (e: Envelope, c: Conn, i: number) => Buffer | null } = {}): Script => (e, c, i) => {
  if (e.name === "hello") {
    const asked = e.body.attachments === true;
    c.sock.write(Buffer.concat([PREFACE, welcomeFrame(e.id!, opts.instance ?? "aaaaaaaaaaaaaaaa", { attachments: asked && (opts.grant ?? true), taps: opts.taps ?? 2 })]));
    return;
  }
  const custom = opts.onCmd?.(e, c, i);
  if (custom !== undefined && custom !== null) return void c.sock.write(custom);
  if (e.name === "ping") c.sock.write(reply(e.id!, "pong", { nonce: e.body.nonce, t_engine_us: 1 }));
  else c.sock.write(reply(e.id!));
};

/** Per test: a broken client fails its test instead of hanging the run. */
const T = 10_000;

const next = <T>(client: EngineClient, ev: "scope" | "spectrum") => new Promise<T>((r) => client.once(ev, (f: any) => r(f)));
const disconnected = (client: EngineClient) => new Promise<string>((r) => client.once("disconnected", r));

test("hello asks for attachments by default; attachments: false sends the old hello byte for byte", { timeout: T }, async () => {
  const fake = await fakeEngine(engine());
  const on = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false });
  await on.start();
  assert.equal(fake.conns[0]!.cmds[0]!.body.attachments, true);
  assert.equal(on.attachments, true);
  assert.equal(on.taps, 2);
  await on.close();
  const off = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false, attachments: false });
  await off.start();
  const hello = fake.conns[1]!.cmds[0]!;
  assert.equal("attachments" in hello.body, false);
  assert.equal(JSON.stringify(hello), commandJson("hello", hello.id!, { protocol: 1, client: "@loophole/ipc/0.1.0" }));
  assert.equal(off.attachments, false);
  assert.equal(off.taps, 2);
  await off.close();
  await fake.close();
});

test("an engine that refuses the attachments field (invalid_field) gets the hello again without it, same socket", { timeout: T }, async () => {
  const fake = await fakeEngine((e, c) => {
    if (e.name === "hello" && "attachments" in e.body) return void c.sock.write(Buffer.concat([PREFACE, errorFrame(e.id!, "invalid_field")]));
    if (e.name === "hello") return void c.sock.write(welcomeFrame(e.id!, "bbbbbbbbbbbbbbbb", {}));
    c.sock.write(reply(e.id!));
  });
  const client = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false });
  await client.start();
  assert.equal(fake.conns.length, 1, "no reconnect");
  assert.deepEqual(fake.conns[0]!.cmds.map((e) => "attachments" in e.body), [true, false]);
  assert.equal(client.attachments, false);
  assert.equal(client.taps, 0, "welcome without taps: 0");
  await client.close();
  await fake.close();
});

test("the attachments refusal lasts one connection: the next connection asks again, and an upgraded engine grants them", { timeout: T }, async () => {
  let upgraded = false;
  const fake = await fakeEngine((e, c) => {
    if (e.name === "hello" && "attachments" in e.body && !upgraded) return void c.sock.write(Buffer.concat([PREFACE, errorFrame(e.id!, "invalid_field")]));
    if (e.name === "hello") return void c.sock.write(Buffer.concat(upgraded ? [PREFACE, welcomeFrame(e.id!, "ffffffffffffffff", { attachments: e.body.attachments === true, taps: 2 })] : [welcomeFrame(e.id!, "eeeeeeeeeeeeeeee", {})]));
    c.sock.write(reply(e.id!));
  });
  const client = new EngineClient({ port: fake.port }, { reconnect: { initialMs: 1, maxMs: 5 }, heartbeat: false });
  await client.start();
  assert.equal(client.attachments, false);
  const restarted = new Promise<string>((r) => client.once("engineRestarted", r));
  upgraded = true; // the engine is replaced by one that knows attachments
  fake.conns[0]!.sock.destroy();
  assert.equal(await restarted, "ffffffffffffffff");
  assert.deepEqual(fake.conns.map((c) => c.cmds.filter((e) => e.name === "hello").map((e) => e.body.attachments === true)), [[true, false], [true]]);
  assert.equal(client.attachments, true);
  assert.equal(client.taps, 2);
  await client.close();
  await fake.close();
});

test("scope and spectrum arrive as typed events with Float32Array, from an attachment and from JSON arrays alike", { timeout: T }, async () => {
  for (const asked of [true, false]) {
    const fake = await fakeEngine(engine({
      onCmd: (e) => {
        if (e.name !== "telemetry.subscribe") return null;
        const ack = reply(e.id!);
        const body = e.body.stream === "scope" ? scopeBody(4) : spectrumBody(4);
        const data = e.body.stream === "scope" ? f32(8, 1) : f32(4, -1);
        const env = { type: "telemetry", name: e.body.stream as string, body };
        if (asked) return Buffer.concat([ack, attachmentFrame(env, data)]);
        const arrays = e.body.stream === "scope" ? { min: Array.from(data.subarray(0, 4)), max: Array.from(data.subarray(4)) } : { db: Array.from(data) };
        return Buffer.concat([ack, encodeFrame(JSON.stringify({ ...env, body: { ...body, ...arrays } }))]);
      },
    }));
    const client = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false, attachments: asked });
    await client.start();
    const scope = next<ScopeFrame>(client, "scope");
    const viaTelemetry = new Promise<ScopeFrame>((r) => client.onTelemetry("scope", r));
    await client.subscribe("scope", { tap: 1, points: 4, rateHz: 30 });
    const s = await scope;
    assert.equal(await viaTelemetry, s, "onTelemetry and the event get the same object");
    assert.ok(s.min instanceof Float32Array && s.max instanceof Float32Array);
    assert.deepEqual(Array.from(s.min), [0.0625, 0.125, 0.1875, 0.25]);
    assert.deepEqual(Array.from(s.max), [0.3125, 0.375, 0.4375, 0.5]);
    assert.equal(s.samplesPerPoint, 3);
    const spectrum = next<SpectrumFrame>(client, "spectrum");
    await client.subscribe("spectrum", { tap: 0, bins: 4, rateHz: 10 });
    const sp = await spectrum;
    assert.ok(sp.db instanceof Float32Array);
    assert.deepEqual(Array.from(sp.db), [-0.0625, -0.125, -0.1875, -0.25]);
    assert.equal(sp.hzPerBin, 6000);
    assert.equal(client.attachmentStats.views + client.attachmentStats.copies, asked ? 2 : 0);
    assert.deepEqual(fake.conns[0]!.cmds.filter((e) => e.name === "telemetry.subscribe").map((e) => e.body), [
      { stream: "scope", rate_hz: 30, tap: 1, points: 4 },
      { stream: "spectrum", rate_hz: 10, tap: 0, bins: 4 },
    ]);
    await client.close();
    await fake.close();
  }
});

test("subscriptions are keyed by (stream, tap), re-sent in every session, removed by (stream, tap) or by stream", { timeout: T }, async () => {
  const fake = await fakeEngine(engine());
  const client = new EngineClient({ port: fake.port }, { reconnect: { initialMs: 1, maxMs: 5 }, heartbeat: false });
  await client.start();
  await client.subscribe("meters", 20);
  await client.subscribe("scope", { tap: 0, points: 64, rateHz: 30 });
  await client.subscribe("scope", { tap: 1, points: 64, rateHz: 30 });
  await client.subscribe("scope", { tap: 0, points: 128, rateHz: 15 }); // replaces key (scope, 0)
  await client.subscribe("spectrum", { tap: 0, bins: 1024, rateHz: 30 });
  const resent = async () => {
    const n = fake.conns.length;
    fake.conns[n - 1]!.sock.destroy();
    while (fake.conns.length === n || fake.conns[n]!.cmds.filter((e) => e.name === "telemetry.subscribe").length < (client as any).subs.size) await sleep(2);
    await client.ready();
    return fake.conns[n]!.cmds.filter((e) => e.name === "telemetry.subscribe").map((e) => e.body);
  };
  assert.deepEqual(await resent(), [
    { stream: "meters", rate_hz: 20 },
    { stream: "scope", rate_hz: 15, tap: 0, points: 128 },
    { stream: "scope", rate_hz: 30, tap: 1, points: 64 },
    { stream: "spectrum", rate_hz: 30, tap: 0, bins: 1024 },
  ]);
  await client.unsubscribe("scope", 1);
  assert.deepEqual(fake.conns.at(-1)!.cmds.at(-1)!.body, { stream: "scope", tap: 1 });
  assert.deepEqual(await resent(), [
    { stream: "meters", rate_hz: 20 },
    { stream: "scope", rate_hz: 15, tap: 0, points: 128 },
    { stream: "spectrum", rate_hz: 30, tap: 0, bins: 1024 },
  ]);
  await client.subscribe("scope", { tap: 1, points: 64, rateHz: 30 });
  await client.unsubscribe("scope");
  assert.deepEqual(fake.conns.at(-1)!.cmds.at(-1)!.body, { stream: "scope" });
  assert.deepEqual(await resent(), [
    { stream: "meters", rate_hz: 20 },
    { stream: "spectrum", rate_hz: 30, tap: 0, bins: 1024 },
  ]);
  await client.close();
  await fake.close();
});

test("a subscription the engine refuses is forgotten; one refused on re-subscribe emits subscriptionFailed", { timeout: T }, async () => {
  let taps = 2;
  const fake = await fakeEngine((e, c) => {
    if (e.name === "hello") return void c.sock.write(Buffer.concat([PREFACE, welcomeFrame(e.id!, "cccccccccccccccc", { attachments: true, taps })]));
    if (e.name === "telemetry.subscribe" && typeof e.body.tap === "number" && e.body.tap >= taps) return void c.sock.write(errorFrame(e.id!, "out_of_range"));
    c.sock.write(reply(e.id!));
  });
  const client = new EngineClient({ port: fake.port }, { reconnect: { initialMs: 1, maxMs: 5 }, heartbeat: false });
  await client.start();
  await assert.rejects(client.subscribe("spectrum", { tap: 5, bins: 64, rateHz: 30 }), (e: unknown) => e instanceof EngineError && e.code === "out_of_range" && e.fromEngine);
  await client.subscribe("spectrum", { tap: 1, bins: 64, rateHz: 30 });
  assert.deepEqual([...(client as any).subs.keys()], ["spectrum#1"], "the refused one is not kept");
  taps = 1; // the engine comes back with fewer taps
  const failed = new Promise<[string, number | undefined, EngineError]>((r) => client.once("subscriptionFailed", (s, t, e) => r([s, t, e])));
  fake.conns[0]!.sock.destroy();
  const [stream, tap, err] = await failed;
  assert.deepEqual([stream, tap, err.code], ["spectrum", 1, "out_of_range"]);
  assert.equal((client as any).subs.size, 0);
  await client.close();
  await fake.close();
});

// Each fault: the client closes the connection with the code in the reason, the request in flight
// settles outcome_unknown, nothing is thrown (uncaughtException above), and it reconnects.
const faults: [string, (e: Envelope) => Buffer][] = [
  ["attachment.bytes disagrees with the frame", () => attachmentFrame({ type: "telemetry", name: "scope", body: scopeBody(4) }, f32(8, 1), { member: { format: "f32le", bytes: 28 } })],
  ["ATTACHMENT flag without the member", () => attachmentFrame({ type: "telemetry", name: "scope", body: scopeBody(4) }, f32(8, 1), { member: null })],
  ["member without the flag", () => encodeFrame(JSON.stringify({ type: "telemetry", name: "scope", body: { ...scopeBody(4), min: [0, 0, 0, 0], max: [0, 0, 0, 0] }, attachment: { format: "f32le", bytes: 32 } }))],
  ["json_len not a multiple of 8", () => attachmentFrame({ type: "telemetry", name: "scope", body: scopeBody(4) }, f32(8, 1), { jsonLen: 60 })],
  ["scope attachment of the wrong size", () => attachmentFrame({ type: "telemetry", name: "scope", body: scopeBody(4) }, f32(6, 1))],
  ["an attachment on a reply", (e) => attachmentFrame({ type: "reply", name: "ack", ref: e.id!, body: {} }, f32(2, 1))],
];
for (const [what, frame] of faults) {
  test(`fault: ${what} → clean close with a precise reason, pending settles, reconnects`, { timeout: T }, async () => {
    const fake = await fakeEngine(engine({ onCmd: (e, _c, i) => (i === 0 && e.name === "transport.play" ? frame(e) : null) }));
    const client = new EngineClient({ port: fake.port }, { reconnect: { initialMs: 1, maxMs: 5 }, heartbeat: false });
    await client.start();
    const why = disconnected(client);
    await assert.rejects(client.request("transport.play", {}), (e: unknown) => e instanceof EngineError && e.code === "outcome_unknown");
    assert.match(await why, /^(bad_attachment|bad_header): /);
    await client.ready();
    await client.request("transport.play", {}); // control: the next session works
    await client.close();
    await fake.close();
  });
}

test("fault: an attachment in a session whose welcome said attachments: false → bad_attachment close (control: granted, accepted)", { timeout: T }, async () => {
  for (const grant of [false, true]) {
    const fake = await fakeEngine(engine({ grant, onCmd: (e) => (e.name === "transport.play" ? Buffer.concat([attachmentFrame({ type: "telemetry", name: "scope", body: scopeBody(4) }, f32(8, 1)), reply(e.id!)]) : null) }));
    const client = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false });
    await client.start();
    const reasons: string[] = [];
    client.on("disconnected", (r) => reasons.push(r));
    let scopes = 0;
    client.on("scope", () => scopes++);
    if (grant) {
      await client.request("transport.play", {});
      assert.equal(scopes, 1);
      assert.deepEqual(reasons, []);
    } else {
      await assert.rejects(client.request("transport.play", {}), (e: unknown) => e instanceof EngineError && e.code === "outcome_unknown");
      assert.match(reasons.join(), /bad_attachment: .*welcome did not allow/);
      assert.equal(scopes, 0);
    }
    await client.close();
    await fake.close();
  }
});

test("attachment frames right behind welcome in the same write are accepted (welcome's flag is read before they are)", { timeout: T }, async () => {
  const fake = await fakeEngine((e, c) => {
    if (e.name !== "hello") return void c.sock.write(reply(e.id!));
    c.sock.write(Buffer.concat([PREFACE, welcomeFrame(e.id!, "dddddddddddddddd", { attachments: true, taps: 1 }), attachmentFrame({ type: "telemetry", name: "spectrum", body: spectrumBody(4) }, f32(4, 1))]));
  });
  const client = new EngineClient({ port: fake.port }, { reconnect: false, heartbeat: false });
  const got = next<SpectrumFrame>(client, "spectrum");
  const reasons: string[] = [];
  client.on("disconnected", (r) => reasons.push(r));
  await client.start();
  assert.deepEqual(Array.from((await got).db), [0.0625, 0.125, 0.1875, 0.25]);
  assert.deepEqual(reasons, []);
  await client.close();
  await fake.close();
});

test("subscriptionFailed only for the engine's refusal: a re-sent subscribe lost with its connection or to close() emits nothing and stays remembered", { timeout: T }, async () => {
  // Connection 0 acks; 1 and 2 never answer a subscribe (the connection drops, then close() is called, with it in flight).
  const fake = await fakeEngine(engine({ onCmd: (e, c, i) => (i > 0 && e.name === "telemetry.subscribe" ? Buffer.alloc(0) : null) }));
  const client = new EngineClient({ port: fake.port }, { reconnect: { initialMs: 1, maxMs: 5 }, heartbeat: false, requestTimeoutMs: 0 });
  const failed: string[] = [];
  client.on("subscriptionFailed", (s, t, e) => failed.push(`${s}#${t} ${e.code}`));
  await client.start();
  await client.subscribe("scope", { tap: 0, points: 64, rateHz: 30 });
  const resentOn = async (n: number) => {
    while (fake.conns.length <= n || !fake.conns[n]!.cmds.some((e) => e.name === "telemetry.subscribe")) await sleep(2);
    await client.ready();
  };
  fake.conns[0]!.sock.destroy();
  await resentOn(1);
  fake.conns[1]!.sock.destroy(); // drops with the re-sent subscribe unanswered: outcome_unknown
  await resentOn(2); // ... and it is re-sent once more: still remembered
  assert.deepEqual(fake.conns[2]!.cmds.filter((e) => e.name === "telemetry.subscribe").map((e) => e.body), [{ stream: "scope", rate_hz: 30, tap: 0, points: 64 }]);
  await client.close(50); // with the third one in flight
  await sleep(20);
  assert.deepEqual(failed, []);
  await fake.close();
});

/** Runs `code` in a child Node process; resolves with what it printed (trimmed). */
async function runChild(code: string): Promise<string> {
  const { spawn } = await import("node:child_process");
  return new Promise<string>((resolve) => {
    const ch = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "pipe", "inherit"] });
    let s = "";
    ch.stdout.setEncoding("utf8").on("data", (d: string) => (s += d));
    ch.on("exit", () => resolve(s.trim()));
  });
}

test("a subscriptionFailed listener that throws surfaces as an uncaught exception, as from any event, never as an unhandled rejection", { timeout: T }, async () => {
  const code = `const net=require("node:net");const {EngineClient,FrameReader,PREFACE,encodeFrame}=require(${JSON.stringify(require.resolve("../src/index"))});
    process.on("uncaughtException",(e)=>{console.log("uncaught "+e.message);process.exit(0);});
    process.on("unhandledRejection",(e)=>{console.log("unhandled "+(e&&e.message));process.exit(0);});
    let n=0;const socks=[];
    const server=net.createServer((s)=>{const k=n++;socks.push(s);const r=new FrameReader();s.on("error",()=>{});s.on("data",(d)=>{for(const e of r.push(d)){
      if(e.name==="hello")s.write(Buffer.concat([PREFACE,encodeFrame(JSON.stringify({type:"reply",name:"welcome",ref:e.id,body:{protocol:1,engine:"fake/0",instance:"eeeeeeeeeeeeeeee",sample_rate:48000,block_size:128,max_frame:65536,heartbeat_ms:1000,timeout_ms:5000}}))]));
      else if(k>0&&e.name==="telemetry.subscribe")s.write(encodeFrame(JSON.stringify({type:"error",name:"error",ref:e.id,body:{code:"out_of_range",message:"fewer taps"}})));
      else s.write(encodeFrame(JSON.stringify({type:"reply",name:"ack",ref:e.id,body:{}})));}});});
    server.listen(0,"127.0.0.1",async()=>{const c=new EngineClient({port:server.address().port},{reconnect:{initialMs:1,maxMs:5},heartbeat:false});
      c.on("subscriptionFailed",()=>{throw new Error("listener-boom");});
      await c.start();await c.subscribe("meters",20);socks[0].destroy();
      setTimeout(()=>{console.log("no event");process.exit(0);},3000);});`;
  const out = await runChild(code);
  assert.equal(out, "uncaught listener-boom");
});

for (const event of ["state", "welcome"]) {
  test(`a ${event} listener that throws during the handshake surfaces as an uncaught exception, never as an unhandled rejection`, { timeout: T }, async () => {
      const code = `const net=require("node:net");const {EngineClient,FrameReader,PREFACE,encodeFrame}=require(${JSON.stringify(require.resolve("../src/index"))});
      process.on("uncaughtException",(e)=>{console.log("uncaught "+e.message);process.exit(0);});
      process.on("unhandledRejection",(e)=>{console.log("unhandled "+(e&&e.message));process.exit(0);});
      const server=net.createServer((s)=>{const r=new FrameReader();s.on("error",()=>{});s.on("data",(d)=>{for(const e of r.push(d)){
        if(e.name==="hello")s.write(Buffer.concat([PREFACE,encodeFrame(JSON.stringify({type:"reply",name:"welcome",ref:e.id,body:{protocol:1,engine:"fake/0",instance:"eeeeeeeeeeeeeeee",sample_rate:48000,block_size:128,max_frame:65536,heartbeat_ms:1000,timeout_ms:5000}}))]));}});});
      server.listen(0,"127.0.0.1",()=>{const c=new EngineClient({port:server.address().port},{heartbeat:false});
        c.on(${JSON.stringify(event)},(s)=>{if(${JSON.stringify(event)}!=="state"||s==="ready")throw new Error("listener-boom");});
        c.start().catch(()=>{});
        setTimeout(()=>{console.log("no event");process.exit(0);},3000);});`;
    const out = await runChild(code);
    assert.equal(out, "uncaught listener-boom");
  });
}

test("an update the engine refuses keeps the subscription it had: re-sent after a reconnect with its old parameters (a new key refused: still forgotten)", { timeout: T }, async () => {
  // Like the engine: a refused subscribe leaves the session's subscription as it was.
  const fake = await fakeEngine(engine({ onCmd: (e) => (e.name === "telemetry.subscribe" && ((e.body.rate_hz as number) > 120 || (e.body.rate_hz as number) > 60 && e.body.stream === "scope") ? errorFrame(e.id!, "out_of_range") : null) }));
  const client = new EngineClient({ port: fake.port }, { reconnect: { initialMs: 1, maxMs: 5 }, heartbeat: false });
  await client.start();
  await client.subscribe("meters", 20);
  await assert.rejects(client.subscribe("meters", 500), (e: unknown) => e instanceof EngineError && e.code === "out_of_range" && e.fromEngine);
  await client.subscribe("scope", { tap: 0, points: 64, rateHz: 30 });
  // Two refused updates of one key in flight at once: the first answer must not leave the second restoring a refused body.
  const both = await Promise.allSettled([client.subscribe("scope", { tap: 0, points: 128, rateHz: 90 }), client.subscribe("scope", { tap: 0, points: 256, rateHz: 100 })]);
  assert.deepEqual(both.map((r) => r.status), ["rejected", "rejected"]);
  await assert.rejects(client.subscribe("scope", { tap: 1, points: 64, rateHz: 61 }), (e: unknown) => e instanceof EngineError && e.code === "out_of_range"); // a key the engine never had
  fake.conns[0]!.sock.destroy();
  while (fake.conns.length < 2) await sleep(2);
  await client.ready();
  await sleep(50); // the re-sent subscribes went out with the session; let them arrive
  assert.deepEqual(fake.conns[1]!.cmds.filter((e) => e.name === "telemetry.subscribe").map((e) => e.body), [
    { stream: "meters", rate_hz: 20 },
    { stream: "scope", rate_hz: 30, tap: 0, points: 64 },
  ]);
  await client.close();
  await fake.close();
});
