// The documentation's examples are files in examples/ (compiled with the tests, so a type error
// fails the build) and are run here; the READMEs must quote them verbatim.
import "./helpers";
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { EngineSupervisor } from "../src/index";
// The examples import the package by name: at run time that is dist/ (package.json exports), not ../src.
import * as ipc from "@loophole/ipc";
import { repoRoot, signalBinary } from "./helpers";
import { main } from "../examples/spawn-and-control";
import { connect } from "../examples/connect-only";
import { analysis } from "../examples/analysis";

const pkgDir = resolve(__dirname, "..", "..");
const example = (f: string) => readFileSync(join(pkgDir, "examples", f), "utf8").trim();
const blocks = (md: string) => [...md.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!.trim());
const bin = signalBinary();
const skip = bin === null ? "signal not built" : false;

test("the package README and the spec README quote the examples verbatim", () => {
  const pkgReadme = readFileSync(join(pkgDir, "README.md"), "utf8");
  const spec = readFileSync(join(repoRoot(), "docs", "specs", "ipc", "README.md"), "utf8");
  for (const f of ["spawn-and-control.ts", "connect-only.ts"]) {
    assert.ok(blocks(pkgReadme).includes(example(f)), `clients/typescript/README.md quotes examples/${f}`);
    assert.ok(blocks(spec).includes(example(f)), `docs/specs/ipc/README.md quotes examples/${f}`);
  }
  assert.ok(example("spawn-and-control.ts").split("\n").length <= 18, "the spawn example stays short");
});

test("examples/spawn-and-control.ts runs against the real engine", { skip }, async () => {
  const log: string[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => void log.push(a.join(" "));
  try {
    await main(bin!);
  } finally {
    console.log = orig;
  }
  assert.ok(log.some((l) => /^applied at sample \d+$/.test(l)), log.join("\n"));
  assert.ok(log.includes("unknown_node"));
});

test("examples/connect-only.ts runs against the real engine", { skip }, async () => {
  const sup = new EngineSupervisor({ spawn: { binary: bin!, token: "" } });
  await sup.start();
  const port = sup.current!.port;
  await sup.client.close(); // free the session for the example
  const log: string[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => void log.push(a.join(" "));
  try {
    await connect(port);
  } finally {
    console.log = orig;
    await sup.stop();
  }
  assert.ok(log.includes("connection ready"));
  assert.ok(log.some((l) => /^stopped \d+$/.test(l)), log.join("\n"));
});

test("the package README quotes examples/analysis.ts verbatim", () => {
  assert.ok(blocks(readFileSync(join(pkgDir, "README.md"), "utf8")).includes(example("analysis.ts")));
});

test("examples/analysis.ts runs against the real engine (when it has analysis taps)", { skip }, async (t) => {
  const probe = new EngineSupervisor({ spawn: { binary: bin! } });
  const taps = (await probe.start()).welcome!.taps;
  await probe.stop();
  const has = typeof taps === "number" && taps > 0;
  if (!has && process.env.LOOPHOLE_REQUIRE_ANALYSIS === "1") throw new Error(`LOOPHOLE_REQUIRE_ANALYSIS=1 but this signal's welcome has taps ${taps}`);
  if (!has) return t.skip(`this signal has no analysis taps (welcome.taps ${taps})`);
  const seen = await analysis(bin!);
  assert.equal(seen[0], "taps 3, attachments true");
  assert.match(seen.find((l) => l.startsWith("peak"))!, /^peak (98\d|10[01]\d) Hz -[67]\.\d dB$/);
  assert.match(seen.find((l) => l.startsWith("scope"))!, /^scope -0\.(49|50) \.\. 0\.(49|50)$/);
});

test("examples/analysis.ts stops the engine it started when a subscribe is refused", { skip }, async (t) => {
  const started: { sup: ipc.EngineSupervisor; pid: number }[] = [];
  const start = ipc.EngineSupervisor.prototype.start;
  t.mock.method(ipc.EngineSupervisor.prototype, "start", async function (this: ipc.EngineSupervisor) {
    const client = await start.call(this);
    started.push({ sup: this, pid: this.pid! });
    return client;
  });
  // As an engine with fewer taps than the example's tap 2 answers (ServerBuilder::analysis_worker(2)).
  t.mock.method(ipc.EngineClient.prototype, "subscribe", async () => {
    throw new ipc.EngineError("out_of_range", "tap 2 >= welcome.taps", { fromEngine: true, command: "telemetry.subscribe" });
  });
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  try {
    await assert.rejects(analysis(bin!), (e: unknown) => e instanceof ipc.EngineError && e.code === "out_of_range");
    assert.equal(started.length, 1);
    assert.equal(started[0]!.sup.state, "stopped", "engine.stop() ran");
    assert.equal(alive(started[0]!.pid), false, `engine ${started[0]!.pid} still running`);
  } finally {
    for (const { sup } of started) await sup.stop(); // the test's own cleanup, when the example left it running
  }
});
