// Shared by the tests: fail on any unhandled rejection, find the repository, load the vectors.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

process.on("unhandledRejection", (reason) => {
  // A promise the client created and nobody handled: exactly what the package promises never
  // to produce. Crash the test process so node:test reports the file as failed.
  process.exitCode = 1;
  console.error("unhandledRejection:", reason);
  throw reason;
});

export function repoRoot(): string {
  let d = resolve(__dirname);
  while (!existsSync(join(d, "docs", "specs", "ipc", "vectors", "vectors.json"))) {
    const up = dirname(d);
    if (up === d) throw new Error("cannot find docs/specs/ipc from " + __dirname);
    d = up;
  }
  return d;
}

export interface Vector {
  name: string;
  description: string;
  kind: "frame" | "stream" | "negative";
  direction: "client_to_engine" | "engine_to_client";
  hex: string;
  json: any;
  canonical?: boolean;
  same_as?: string;
  preface?: boolean;
  layer?: string;
  state?: "connected" | "awaiting_hello" | "established";
  error?: string | null;
  ref?: number | null;
  closes?: boolean;
  partial?: boolean;
}

export function vectors(): Vector[] {
  return JSON.parse(readFileSync(join(repoRoot(), "docs", "specs", "ipc", "vectors", "vectors.json"), "utf8")) as Vector[];
}

/** The signal example binary built by `cargo build --release --example signal`, or null. */
export function signalBinary(): string | null {
  const env = process.env.LOOPHOLE_SIGNAL_BIN;
  if (env) return env;
  const ext = process.platform === "win32" ? ".exe" : "";
  const p = join(repoRoot(), "target", "release", "examples", "signal" + ext);
  return existsSync(p) ? p : null;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
