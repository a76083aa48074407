// `npm run bench [-- --bin PATH] [--pings N]`: figures for the README, as ratios against a floor
// measured in the same run. Not a test: nothing here passes or fails.
//  1. ping round trip through EngineClient against `signal` vs a raw net socket sending the same
//     frame to a minimal Node echo server in another process (the floor: two Node event loops
//     and loopback TCP, no protocol).
//  2. pipelined commands/s (param.set, bounded by maxInFlight 256).
//  3. µs to decode a 64-channel and a 512-channel meters frame (FrameReader, in one chunk).
//  4. heap before and after 100 000 commands (after gc), and the pending map size.
//  5. a 1024-bin spectrum frame: JSON arrays vs attachment, decode µs and bytes (bench-analysis.ts;
//     `-- --analysis-only` runs only this part, without the engine).
import { spawn } from "node:child_process";
import * as net from "node:net";
import { EngineSupervisor } from "./supervisor";
import { FrameReader, encodeCommand, encodeFrame } from "./codec";
import { argNum, percentiles, signalPath } from "./engine-path";
import { runSpectrumBench } from "./bench-analysis";

const ECHO = `const net=require("net");net.createServer(s=>{s.setNoDelay(true);s.on("data",d=>s.write(d));s.on("error",()=>{})}).listen(0,"127.0.0.1",function(){console.log(this.address().port)});`;

async function echoFloor(n: number, frame: Buffer): Promise<number[]> {
  const child = spawn(process.execPath, ["-e", ECHO], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((r) => child.stdout!.setEncoding("utf8").once("data", (d: string) => r(Number(d.trim()))));
  const sock = net.createConnection({ host: "127.0.0.1", port, noDelay: true });
  await new Promise((r) => sock.once("connect", r));
  const out: number[] = [];
  let got = 0;
  let done: (() => void) | null = null;
  sock.on("data", (d) => {
    got += d.length;
    if (got >= frame.length) {
      got -= frame.length;
      done?.();
    }
  });
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await new Promise<void>((r) => {
      done = r;
      sock.write(frame);
    });
    out.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  sock.destroy();
  child.kill();
  return out;
}

function decodeUs(channels: number, n: number): [number, number] {
  const vals = Array.from({ length: channels }, (_, i) => 0.001 + i / (channels * 1.37));
  const frame = encodeFrame(JSON.stringify({ type: "telemetry", name: "meters", body: { peak: vals, rms: vals.map((v) => v / 2) } }));
  const r = new FrameReader({ preface: false });
  for (let i = 0; i < 1000; i++) r.push(frame);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) r.push(frame);
  const reader = Number(process.hrtime.bigint() - t0) / 1000 / n;
  const text = frame.subarray(8).toString("utf8"); // the floor: JSON.parse of the payload alone
  const t1 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) JSON.parse(text);
  return [reader, Number(process.hrtime.bigint() - t1) / 1000 / n];
}

const gc = (globalThis as { gc?: () => void }).gc;
const heapMb = () => {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed / 1048576;
};

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes("--analysis-only")) return runSpectrumBench();
  const pings = argNum(argv, "--pings", 5000);
  const sup = new EngineSupervisor({ spawn: { binary: signalPath(argv), args: ["--no-rt"] } });
  const client = await sup.start();
  const f = (x: number) => x.toFixed(1);

  // 1. ping round trip vs the floor (interleaved warm-up first).
  for (let i = 0; i < 500; i++) await client.request("ping", { nonce: i });
  const viaClient: number[] = [];
  for (let i = 0; i < pings; i++) {
    const t0 = process.hrtime.bigint();
    await client.request("ping", { nonce: i });
    viaClient.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  const floor = await echoFloor(pings, encodeCommand("ping", 7, { nonce: 1 }));
  const a = percentiles(viaClient);
  const b = percentiles(floor);
  console.log(`ping RTT via EngineClient → signal: p50 ${f(a.p50)} µs  p99 ${f(a.p99)} µs  (n = ${a.count})`);
  console.log(`raw net socket → Node echo (floor): p50 ${f(b.p50)} µs  p99 ${f(b.p99)} µs`);
  console.log(`ratio p50 ${(a.p50 / b.p50).toFixed(2)}×  (target ≤ 1.3×)`);

  // 2. pipelined commands/s.
  const N = 20_000;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: N }, (_, i) => client.request("param.set", { node: 2, param: 0, value: (i % 100) / 200 })));
  const secs = (performance.now() - t0) / 1000;
  console.log(`pipelined param.set: ${N} in ${secs.toFixed(2)} s = ${(N / secs).toFixed(0)} commands/s (max in flight 256)`);

  // 3. decode cost.
  for (const [ch, n] of [[64, 20_000], [512, 5_000]] as const) {
    const [r, p] = decodeUs(ch, n);
    console.log(`decode meters frame, ${ch} ch: FrameReader ${r.toFixed(2)} µs vs JSON.parse alone ${p.toFixed(2)} µs (${(r / p).toFixed(2)}×)`);
  }

  // 4. heap after 100 000 commands.
  const before = heapMb();
  for (let k = 0; k < 10; k++) await Promise.all(Array.from({ length: 10_000 }, () => client.request("transport.seek", { sample: 0 })));
  const after = heapMb();
  console.log(`heap: ${f(before)} MB before, ${f(after)} MB after 100 000 commands${gc ? "" : " (run with --expose-gc for a gc'd figure)"}; pending ${client.inFlight}, queued ${client.queued}`);
  await sup.stop();

  // 5. analysis frames.
  runSpectrumBench();
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
