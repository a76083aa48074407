// The TypeScript EngineSupervisor + EngineClient against the C++ engine example
// (capi/examples/signal_cpp, built by scripts/test.d/30-capi.sh into target/capi/signal_cpp, or
// LOOPHOLE_CPP_ENGINE): the demo's scripted session (src/demo-session.ts) judged by demoProblems
// (every command acked, meters non-zero while playing and zero while stopped, transport rate
// within ±20 %, the seek seen), then kill -9 → supervisor restart → engineRestarted → commands
// work again, and stop() leaves no process.
// Negative controls: the same checks flag a C++ engine whose device runs at half speed, and a
// killed engine the supervisor does not restart.
// Skipped (loudly) when the binary is missing, unless LOOPHOLE_REQUIRE_CPP_ENGINE=1 (CI sets it).
import "./helpers";
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { EngineSupervisor, EngineClient, type SpawnOptions } from "../src/index";
import { demoProblems, runDemoSession } from "../src/demo-session";
import { repoRoot } from "./helpers";

function cppEngine(): string | null {
  const env = process.env.LOOPHOLE_CPP_ENGINE;
  if (env) return existsSync(env) ? env : null;
  const p = join(repoRoot(), process.env.CARGO_TARGET_DIR ?? "target", "capi", "signal_cpp");
  return existsSync(p) ? p : null;
}

const bin = cppEngine();
const HOW = "bash scripts/test.d/30-capi.sh builds target/capi/signal_cpp (or set LOOPHOLE_CPP_ENGINE)";
if (bin === null) {
  if (process.env.LOOPHOLE_REQUIRE_CPP_ENGINE === "1") throw new Error(`LOOPHOLE_REQUIRE_CPP_ENGINE=1 but the C++ engine is missing: ${HOW}`);
  console.warn(`\n!!!!!!!! SKIPPING the C++ engine tests: no C++ engine binary. ${HOW} !!!!!!!!\n`);
}
const skip = bin === null ? `C++ engine not built: ${HOW}` : false;
const DEMO_S = 3;

function supervisor(extraArgs: string[] = [], spawn: Partial<SpawnOptions> = {}): EngineSupervisor {
  return new EngineSupervisor({
    spawn: { binary: bin!, args: ["--no-rt", ...extraArgs], restartBackoffMs: { initial: 20 }, ...spawn },
    client: { requestTimeoutMs: 3_000, reconnect: { initialMs: 20, maxMs: 200 } },
  });
}

function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ESRCH";
  }
}

/** kill -9 the engine; empty when the supervisor restarted it, the client emitted
 *  engineRestarted with a new instance, the old process is gone and commands are acked again. */
async function restartProblems(sup: EngineSupervisor, client: EngineClient, timeoutMs: number): Promise<string[]> {
  const p: string[] = [];
  const oldPid = sup.pid!;
  const oldInstance = client.welcome!.instance;
  let timer: NodeJS.Timeout | undefined;
  let onRestart: ((now: string, before: string) => void) | undefined;
  const restarted = new Promise<[string, string] | null>((resolve) => {
    timer = setTimeout(() => resolve(null), timeoutMs);
    onRestart = (now, before) => resolve([now, before]);
    client.once("engineRestarted", onRestart);
  });
  process.kill(oldPid, "SIGKILL");
  const r = await restarted;
  clearTimeout(timer);
  client.off("engineRestarted", onRestart!);
  if (r === null) p.push(`no engineRestarted within ${timeoutMs} ms (supervisor ${sup.state}, client ${client.state})`);
  else {
    if (r[1] !== oldInstance) p.push(`engineRestarted names ${r[1]} as the previous instance, not ${oldInstance}`);
    if (r[0] === oldInstance) p.push("engineRestarted with the same instance");
  }
  if (!gone(oldPid)) p.push(`the killed engine ${oldPid} is still there`);
  if (sup.pid === null || sup.pid === oldPid) p.push(`no new engine process (pid ${sup.pid})`);
  for (const [name, run] of [
    ["ping", () => client.request("ping", { nonce: 9 }, { timeoutMs: 2_000 })],
    ["transport.play", () => client.request("transport.play", {}, { timeoutMs: 2_000 })],
    ["param.set", () => client.request("param.set", { node: 2, param: 0, value: 0.5 }, { timeoutMs: 2_000 })],
  ] as const) {
    try {
      await run();
    } catch (e) {
      p.push(`${name} after the restart: ${(e as Error).message}`);
    }
  }
  return p;
}

test("TS supervisor + client drive the C++ engine: demo, kill -9 → restart, stop", { skip, timeout: 60_000 }, async () => {
  const sup = supervisor();
  try {
    const client = await sup.start();
    const s = await runDemoSession(client, { durationS: DEMO_S });
    assert.deepEqual(demoProblems(s), [], JSON.stringify(s));
    assert.equal(s.restarts, 0);
    assert.ok(s.telemetry.meters >= 30, `meters frames ${s.telemetry.meters}`);
    console.log(`C++ engine demo: ${s.commands.acks}/${s.commands.sent} acked, transport ${s.transport.ratio.toFixed(3)} ×, meters playing ${s.meters.playFrames} (peak ≥ ${s.meters.playPeakMin.toFixed(3)})`);
    assert.deepEqual(await restartProblems(sup, client, 10_000), []);
  } finally {
    const pid = sup.pid;
    assert.ok(pid !== null && !gone(pid), "the engine runs before stop() (the check below can fail)");
    await sup.stop();
    assert.ok(gone(pid), `stop() leaves no engine process (pid ${pid})`);
    assert.equal(sup.state, "stopped");
  }
});

test("negative control: a C++ engine whose device runs at half speed fails the demo check", { skip, timeout: 60_000 }, async () => {
  const sup = supervisor(["--device-speed", "0.5"]);
  try {
    const client = await sup.start();
    const problems = demoProblems(await runDemoSession(client, { durationS: DEMO_S }));
    assert.ok(problems.some((x) => x.startsWith("transport rate")), `the slow device is flagged: ${JSON.stringify(problems)}`);
  } finally {
    await sup.stop();
  }
});

test("negative control: a killed C++ engine that is not restarted fails the restart check", { skip, timeout: 60_000 }, async () => {
  const sup = supervisor([], { maxRestarts: 0 });
  const failed = new Promise<void>((r) => sup.once("failed", () => r()));
  try {
    const client = await sup.start();
    await client.request("transport.play", {});
    const problems = await restartProblems(sup, client, 1_500);
    await failed;
    assert.ok(problems.some((x) => x.startsWith("no engineRestarted")), JSON.stringify(problems));
    assert.ok(problems.some((x) => x.startsWith("ping after the restart")), JSON.stringify(problems));
  } finally {
    await sup.stop();
  }
});
