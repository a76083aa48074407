// Where the demo and the bench find the `signal` example binary.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

/** `--bin PATH`, else LOOPHOLE_SIGNAL_BIN, else the repository's target/release/examples/signal. */
export function signalPath(argv: string[]): string {
  const i = argv.indexOf("--bin");
  if (i >= 0 && argv[i + 1]) return argv[i + 1]!;
  if (process.env.LOOPHOLE_SIGNAL_BIN) return process.env.LOOPHOLE_SIGNAL_BIN;
  const p = resolve(__dirname, "..", "..", "..", "target", "release", "examples", "signal" + (process.platform === "win32" ? ".exe" : ""));
  if (!existsSync(p)) throw new Error(`no engine binary at ${p}: run \`cargo build --release --example signal\` or pass --bin PATH`);
  return p;
}

export function percentiles(xs: number[]): { p50: number; p90: number; p99: number; max: number; count: number } {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => (s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))]! : NaN);
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: s.length ? s[s.length - 1]! : NaN, count: s.length };
}

export const argNum = (argv: string[], name: string, dflt: number) => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
