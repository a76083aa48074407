// `npm run demo [-- --duration S] [--bin PATH]`: the scripted session of the Rust `aura` example
// (examples/aura/demo.rs, shared with the tests in ./demo-session) through this package, against
// the `signal` binary (or any engine speaking the protocol, e.g. target/capi/signal_cpp), with a
// summary. Exits 1 when the run has a problem (demoProblems).
import { EngineSupervisor } from "./supervisor";
import { argNum, signalPath } from "./engine-path";
import { demoProblems, formatSummary, runDemoSession } from "./demo-session";

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const durationS = argNum(argv, "--duration", 6);
  const sup = new EngineSupervisor({ spawn: { binary: signalPath(argv), args: ["--no-rt"] } });
  try {
    const client = await sup.start();
    const s = await runDemoSession(client, { durationS, progress: (line) => console.log(line) });
    console.log("\n" + formatSummary(s));
    const problems = demoProblems(s);
    for (const p of problems) console.error("problem: " + p);
    if (problems.length) process.exitCode = 1;
  } finally {
    await sup.stop();
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
