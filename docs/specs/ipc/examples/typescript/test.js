// Runs the client sketch of ../../README.md (client.ts, compiled to out/) against the golden
// vectors and against a fake engine on loopback. `npm install && npm test`.
"use strict";
const net = require("net");
const fs = require("fs");
const path = require("path");
const assert = require("assert");
const { FrameReader, encodeFrame, EngineClient, EngineError } = require("./out/client.js");

const vectors = JSON.parse(fs.readFileSync(path.join(__dirname, "../../vectors/vectors.json"), "utf8"));
const PREFACE = Buffer.from("894c50480d0a1a0a", "hex");

// 1. The reader decodes every engine_to_client vector, in one chunk and one byte at a time.
let decoded = 0;
for (const v of vectors.filter((v) => v.direction === "engine_to_client")) {
  const bytes = Buffer.from(v.hex, "hex");
  const input = v.kind === "stream" ? bytes : Buffer.concat([PREFACE, bytes]);
  const want = v.kind === "stream" ? v.json : [v.json];
  assert.deepStrictEqual(new FrameReader().push(input), want, v.name);
  const reader = new FrameReader();
  let got = [];
  for (const b of input) got = got.concat(reader.push(Buffer.from([b])));
  assert.deepStrictEqual(got, want, `${v.name}, byte by byte`);
  decoded++;
}
assert.throws(() => new FrameReader().push(Buffer.from("GET / HTTP/1.1\r\n")), /not a Loophole engine/);
assert.throws(() => new FrameReader().push(Buffer.concat([PREFACE, Buffer.from("0001000101000000", "hex")])));

// 2. The encoder matches every canonical client_to_engine vector byte for byte, except where
//    JSON.stringify writes a whole float without ".0" (accepted by the engine: decode.integer_float).
let identical = 0;
let wholeFloats = 0;
for (const v of vectors.filter((v) => v.kind === "frame" && v.canonical && v.direction === "client_to_engine")) {
  if (encodeFrame(v.json).toString("hex") === v.hex) identical++;
  else {
    assert.match(Buffer.from(v.hex, "hex").toString("latin1"), /\d\.0\b/, v.name);
    wholeFloats++;
  }
}
console.log(`reader: ${decoded} vectors; encoder: ${identical} byte-identical, ${wholeFloats} differ only by whole floats`);

// 3. A fake engine: session 1 acks the subscription, fails a param.set, then drops the connection;
//    session 2 comes from a "restarted" engine (new instance). The client must reconnect, notice
//    the restart, and subscribe again.
const frame = (env) => encodeFrame(env);
let connections = 0;
const subscribedIn = [];
let pings = 0;
const server = net.createServer((sock) => {
  const session = ++connections;
  let buf = Buffer.alloc(0);
  let prefaceSeen = false;
  sock.on("data", (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    if (!prefaceSeen) {
      if (buf.length < 8) return;
      assert.deepStrictEqual(buf.subarray(0, 8), PREFACE);
      buf = buf.subarray(8);
      prefaceSeen = true;
    }
    while (buf.length >= 8 && buf.length >= 8 + buf.readUInt32BE(0)) {
      const len = buf.readUInt32BE(0);
      const env = JSON.parse(buf.subarray(8, 8 + len).toString("utf8"));
      buf = buf.subarray(8 + len);
      answer(sock, session, env);
    }
  });
  sock.on("error", () => {});
});

function answer(sock, session, env) {
  const reply = (name, body) => frame({ type: "reply", name, ref: env.id, body });
  switch (env.name) {
    case "hello":
      sock.write(Buffer.concat([
        PREFACE,
        reply("welcome", {
          protocol: 1, engine: "fake/0", instance: session === 1 ? "00000000000000aa" : "00000000000000bb",
          sample_rate: 48000, block_size: 256, max_frame: 65536, heartbeat_ms: 50, timeout_ms: 500,
        }),
      ]));
      break;
    case "telemetry.subscribe":
      subscribedIn.push(session);
      sock.write(Buffer.concat([reply("ack", {}), frame({ type: "telemetry", name: "meters", body: { peak: [0.5], rms: [0.25] } })]));
      break;
    case "param.set":
      sock.write(frame({ type: "error", name: "error", ref: env.id, body: { code: "unknown_node", message: "node 3 does not exist" } }));
      if (session === 1) setTimeout(() => sock.destroy(), 20);
      break;
    case "ping":
      pings++;
      sock.write(reply("pong", { nonce: env.body.nonce, t_engine_us: 1 }));
      break;
    default:
      sock.write(frame({ type: "error", name: "error", ref: env.id, body: { code: "unknown_message", message: env.name } }));
  }
}

server.listen(0, "127.0.0.1", () => {
  let restarts = 0;
  let meters = 0;
  let failure = null;
  const client = new EngineClient(server.address().port, () => meters++, () => restarts++);
  client.start();
  setTimeout(async () => {
    await client.subscribe("meters", 30);
    failure = await client.request("param.set", { node: 3, param: 1, value: 0.5 }).catch((e) => e);
  }, 100);
  setTimeout(() => {
    client.stop();
    server.close();
    assert.ok(failure instanceof EngineError && failure.code === "unknown_node", String(failure));
    assert.deepStrictEqual(subscribedIn, [1, 2], "subscribed in session 1, subscribed again in session 2");
    assert.strictEqual(connections, 2);
    assert.strictEqual(restarts, 1);
    assert.ok(meters >= 2 && pings >= 2, `meters ${meters}, pings ${pings}`);
    console.log(`fake engine: ${connections} sessions, ${restarts} restart seen, ${meters} meters frames, ${pings} pings: ok`);
  }, 1200);
});
