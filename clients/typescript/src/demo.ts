// `npm run demo [-- --duration S] [--bin PATH]`: the scripted session of the Rust `aura` example
// (examples/aura/demo.rs, shared with the tests in ./demo-session) through this package, against
// the `signal` binary (or any engine speaking the protocol, e.g. target/capi/signal_cpp), with a
// summary. Exits 1 when the run has a problem (demoProblems), 2 on a bad command line.
import { EngineSupervisor } from "./supervisor";
import { signalPath } from "./engine-path";
import { demoProblems, formatSummary, runDemoSession } from "./demo-session";

export const USAGE = `usage: node dist/demo.js [--duration SECONDS] [--bin PATH]    (or: npm run demo -- [options])

Runs the scripted session of the Rust \`aura\` example (set-up, play, a 220 -> 880 Hz sweep, gain
ramps, a seek, stop) against a Signal engine it spawns, then prints a summary. Exits 0 when the
run meets the criteria of the Rust e2e tests, 1 when it does not (each problem named), 2 on a bad
command line.

  --duration SECONDS  length of the script, a number > 0 and <= 3600 (default 6)
  --bin PATH          the engine binary (default $LOOPHOLE_SIGNAL_BIN, else the repository's
                      target/release/examples/signal; target/capi/signal_cpp drives the C++ engine)
  -h, --help          print this text and exit`;

/** The command line, or why it is refused (`error`), or a request for the usage text. */
export type DemoArgs = { help: true } | { help: false; durationS: number; bin: string | undefined } | { error: string };

/** Parses `argv` (without node and the script): `--name VALUE` or `--name=VALUE`; anything else is refused. */
export function parseDemoArgs(argv: string[]): DemoArgs {
  let durationS = 6;
  let bin: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "-h" || arg === "--help") return { help: true };
    const eq = arg.indexOf("=");
    const name = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    if (name !== "--duration" && name !== "--bin") return { error: `unknown argument ${JSON.stringify(arg)}` };
    let value: string | undefined;
    if (name !== arg) value = arg.slice(eq + 1);
    else {
      value = argv[i + 1];
      if (value === undefined || value.startsWith("--")) return { error: `${name} needs a value` };
      i++;
    }
    if (name === "--bin") {
      if (value === "") return { error: "--bin needs a path" };
      bin = value;
    } else {
      // A plain decimal (digits, an optional fraction): Number() alone would take "" as 0 and
      // " 3 ", "0x10" and "1e3" as numbers.
      const d = /^\d+(\.\d+)?$/.test(value) ? Number(value) : NaN;
      if (!Number.isFinite(d) || d <= 0 || d > 3600) return { error: `--duration must be a number of seconds > 0 and <= 3600, got ${JSON.stringify(value)}` };
      durationS = d;
    }
  }
  return { help: false, durationS, bin };
}

async function main(): Promise<void> {
  const args = parseDemoArgs(process.argv.slice(2));
  if ("error" in args) {
    console.error(`demo: ${args.error}\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (args.help) {
    console.log(USAGE);
    return;
  }
  const sup = new EngineSupervisor({ spawn: { binary: signalPath(args.bin === undefined ? [] : ["--bin", args.bin]), args: ["--no-rt"] } });
  try {
    const client = await sup.start();
    const s = await runDemoSession(client, { durationS: args.durationS, progress: (line) => console.log(line) });
    console.log("\n" + formatSummary(s));
    const problems = demoProblems(s);
    for (const p of problems) console.error("problem: " + p);
    if (problems.length) process.exitCode = 1;
  } finally {
    await sup.stop();
  }
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e instanceof Error ? e.message : e);
    process.exitCode = 1;
  });
}
