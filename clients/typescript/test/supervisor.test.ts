// EngineSupervisor: spawn, announcement, failures, restart budget, shutdown ladder, exit hooks.
import "./helpers";
import { test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { EngineSupervisor, EngineStartError, parseAnnouncement } from "../src/index";
import { signalBinary, sleep } from "./helpers";

const fakeEngine = resolve(__dirname, "..", "..", "test", "fixtures", "fake-engine.cjs");
const fake = (env: Record<string, string>, extra: object = {}) =>
  new EngineSupervisor({ spawn: { binary: process.execPath, args: [fakeEngine], env, restartBackoffMs: { initial: 1, max: 5 }, ...extra }, client: { reconnect: { initialMs: 5, maxMs: 20 } } });
/** Whether pid runs. A zombie counts as dead: this container's pid 1 does not reap orphans. */
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return process.platform !== "linux";
  }
};
const bin = signalBinary();

test("parseAnnouncement: prefix, unknown keys, garbage", () => {
  assert.deepEqual(parseAnnouncement('LOOPHOLE_LISTEN {"host":"127.0.0.1","port":40123,"pid":4242,"protocol":1,"instance":"9f86d081884c7d65","later":true}'), { host: "127.0.0.1", port: 40123, pid: 4242, protocol: 1, instance: "9f86d081884c7d65" });
  assert.equal(parseAnnouncement("LOOPHOLE_LISTENER {}"), null);
  assert.equal(parseAnnouncement("LOOPHOLE_LISTEN {not json"), null);
  assert.equal(parseAnnouncement('LOOPHOLE_LISTEN {"host":"127.0.0.1","port":0}'), null);
});

test("parseAnnouncement: pid, protocol or instance that no conversion can read ({toString: 1, valueOf: 1}) do not throw out of the stdout reader", () => {
  const odd = '{"toString":1,"valueOf":1}';
  const a = parseAnnouncement(`LOOPHOLE_LISTEN {"host":"127.0.0.1","port":40123,"pid":${odd},"protocol":${odd},"instance":${odd}}`);
  assert.deepEqual(a, { host: "127.0.0.1", port: 40123, pid: NaN, protocol: NaN, instance: "" });
  // Control: readable values still read as before.
  assert.deepEqual(parseAnnouncement('LOOPHOLE_LISTEN {"host":"127.0.0.1","port":40123,"pid":"4242","protocol":1,"instance":"9f86d081884c7d65"}'), { host: "127.0.0.1", port: 40123, pid: 4242, protocol: 1, instance: "9f86d081884c7d65" });
});

test("token travels in the environment, never argv; --supervisor-pid is passed; other stdout lines ignored", async () => {
  const sup = fake({ FAKE_MODE: "serve" });
  const lines: string[] = [];
  sup.on("stderr", (l) => lines.push(l));
  const client = await sup.start();
  assert.equal(client.state, "ready", "the client presented the token the engine got");
  const seen = JSON.parse(lines[0]!);
  const token = (sup as any).token as string;
  assert.match(token, /^[0-9a-f]{64}$/);
  assert.equal(seen.token, token);
  assert.ok(!seen.argv.some((a: string) => a.includes(token)), "token not in argv");
  assert.deepEqual(seen.argv.slice(-2), ["--supervisor-pid", String(process.pid)]);
  const pid = sup.pid!;
  assert.ok(Number.isInteger(pid) && alive(pid), "control: a running engine's pid");
  await sup.stop();
  assert.equal(alive(pid), false);
  assert.equal(sup.pid, null, "stopped: no pid");
  assert.equal(sup.state, "stopped");
});

test("no announcement in time: EngineStartError, the process is killed", async () => {
  const sup = fake({ FAKE_MODE: "silent" }, { listenTimeoutMs: 1000 });
  let pid = 0;
  sup.once("state", () => setImmediate(() => (pid = sup.pid ?? 0)));
  await assert.rejects(sup.start(), (e: unknown) => e instanceof EngineStartError && /no LOOPHOLE_LISTEN line within 1000 ms/.test(e.message) && e.exitCode === null);
  await sleep(100);
  assert.equal(sup.state, "failed");
  assert.ok(pid > 0 && !alive(pid), "the silent engine was killed");
});

test("engine that cannot start: the error carries its exit code and stderr tail (real signal, port in use)", { skip: bin === null ? "signal not built" : false }, async () => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
  const port = (blocker.address() as net.AddressInfo).port;
  const sup = new EngineSupervisor({ spawn: { binary: bin!, args: ["--no-rt", "--port", String(port)] } });
  await assert.rejects(sup.start(), (e: unknown) => e instanceof EngineStartError && e.exitCode === 3 && e.stderrTail.includes(String(port)) && /in use/.test(e.stderrTail));
  blocker.close();
});

test("crash restarts within the budget, then failed; the client sees each new instance", async () => {
  const sup = fake({ FAKE_MODE: "crash", FAKE_CRASH_MS: "150" }, { maxRestarts: 2, restartWindowMs: 60_000 });
  let restarts = 0;
  sup.client.on("engineRestarted", () => restarts++);
  const failed = new Promise<Error>((r) => sup.once("failed", r));
  await sup.start();
  const err = await failed;
  assert.match(err.message, /crashed 3 times/);
  assert.equal(sup.state, "failed");
  assert.equal(sup.pid, null, "no engine runs: no pid (it used to be the dead engine's)");
  assert.ok(restarts >= 1, `engineRestarted at least once: ${restarts}`);
  await assert.rejects(sup.client.request("ping", { nonce: 1 }), /not_sent/);
  await sup.stop();
});

test("stop() during a restart leaves no engine behind", async () => {
  const sup = fake({ FAKE_MODE: "crash", FAKE_CRASH_MS: "100" }, { restartBackoffMs: { initial: 30 } });
  const pids: number[] = [];
  sup.on("spawned", (a) => pids.push(a.pid));
  await sup.start();
  await new Promise<void>((r) => sup.once("exit", () => r()));
  const stopping = sup.stop(); // while the restart timer runs
  await stopping;
  await sleep(100);
  assert.equal(pids.length, 1, "no respawn after stop()");
  for (const p of pids) assert.equal(alive(p), false);
});

test("stop() while start() is spawning or handshaking: start() rejects EngineStartError, the state never returns to running, one ladder, no engine left", async () => {
  for (const when of ["spawning", "handshaking"] as const) {
    const sup = fake({ FAKE_MODE: "serve" });
    const states: string[] = [];
    sup.on("state", (s) => states.push(s));
    const pids: number[] = [];
    let stopping: Promise<void> | null = null;
    sup.on("spawned", (a) => {
      pids.push(a.pid);
      if (when === "handshaking") stopping = sup.stop(); // the client has not connected yet
    });
    const started = sup.start().then(
      () => "resolved",
      (e: unknown) => (e instanceof EngineStartError ? "EngineStartError" : `${(e as Error).name}: ${(e as Error).message}`),
    );
    if (when === "spawning") stopping = sup.stop(); // before the announcement
    assert.equal(await started, "EngineStartError", when);
    await stopping;
    assert.equal(sup.state, "stopped");
    assert.deepEqual(states.slice(states.indexOf("stopping")), ["stopping", "stopped"], `${when}: ${states.join(" > ")}`);
    for (const p of pids) assert.equal(alive(p), false, `${when}: engine ${p} left running`);
  }
});

test("shutdown ladder: engine.shutdown ignored and SIGTERM ignored → SIGKILL", async () => {
  const sup = fake({ FAKE_MODE: "serve", FAKE_IGNORE_SHUTDOWN: "1", FAKE_IGNORE_TERM: "1" }, { shutdownTimeoutsMs: { graceful: 100, term: 100, kill: 1000 } });
  const lines: string[] = [];
  sup.on("stderr", (l) => lines.push(l));
  await sup.start();
  const pid = sup.pid!;
  const t0 = Date.now();
  await sup.stop();
  assert.equal(alive(pid), false);
  assert.ok(lines.includes("ignoring SIGTERM"), "SIGTERM was tried first");
  assert.ok(Date.now() - t0 >= 200, "each step waited its timeout");
});

test("graceful stop: engine.shutdown is enough, no signal needed", async () => {
  const sup = fake({ FAKE_MODE: "serve", FAKE_IGNORE_TERM: "1" }, { shutdownTimeoutsMs: { graceful: 2000, term: 100 } });
  const lines: string[] = [];
  sup.on("stderr", (l) => lines.push(l));
  const codes: (number | null)[] = [];
  sup.on("exit", (c) => codes.push(c));
  await sup.start();
  await sup.stop();
  assert.ok(!lines.includes("ignoring SIGTERM"));
});

for (const how of ["exit", "SIGTERM", "SIGINT"] as const) {
  test(`the engine dies with its Node parent (${how})`, async () => {
    const idx = JSON.stringify(resolve(__dirname, "..", "src", "index.js"));
    const code = `const {EngineSupervisor}=require(${idx});
      const s=new EngineSupervisor({spawn:{binary:process.execPath,args:[${JSON.stringify(fakeEngine)}],env:{FAKE_MODE:"serve",FAKE_IGNORE_TERM:"1"}}});
      s.start().then(()=>{console.log(s.pid); ${how === "exit" ? "process.stdin.once('data',()=>process.exit(0))" : "setInterval(()=>{},1000)"} });`;
    // In "exit" mode the parent exits only when told (a line on its stdin), so the engine is
    // seen alive first whatever the machine's load.
    const ch = spawn(process.execPath, ["-e", code], { stdio: ["pipe", "pipe", "inherit"] });
    const pid = await new Promise<number>((r) => ch.stdout.setEncoding("utf8").once("data", (d: string) => r(Number(d.trim()))));
    assert.ok(alive(pid));
    if (how === "exit") ch.stdin.write("exit\n");
    else ch.kill(how);
    await new Promise((r) => ch.once("exit", r));
    await sleep(100);
    assert.equal(alive(pid), false, "engine killed");
  });
}

test("connect-only mode: connection file (real signal) and port", { skip: bin === null ? "signal not built" : false }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "loophole-ts-"));
  const file = join(dir, "conn.json");
  const env = { ...process.env };
  delete env.LOOPHOLE_SESSION_TOKEN;
  const eng = spawn(bin!, ["--no-rt", "--connection-file", file], { env, stdio: ["ignore", "pipe", "ignore"] });
  const ann = await new Promise<string>((r) => eng.stdout.setEncoding("utf8").on("data", (d: string) => d.includes("LOOPHOLE_LISTEN") && r(d)));
  try {
    const viaFile = new EngineSupervisor({ connect: { connectionFile: file } });
    const c = await viaFile.start();
    assert.equal(c.welcome!.instance, JSON.parse(readFileSync(file, "utf8")).instance);
    await viaFile.stop(); // connect-only: closes the client, leaves the engine alone
    assert.equal(alive(eng.pid!), true);
    const viaPort = new EngineSupervisor({ connect: { port: parseAnnouncement(ann.trim())!.port } });
    await (await viaPort.start()).request("ping", { nonce: 3 });
    await viaPort.stop();
  } finally {
    eng.kill("SIGKILL");
  }
});
