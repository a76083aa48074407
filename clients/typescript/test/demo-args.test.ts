// The demo's command line (`node dist/demo.js`): --help prints the usage, unknown flags and bad
// values exit 2 with a message, before any engine is spawned.
import "./helpers";
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { parseDemoArgs } from "../src/demo";

const demo = resolve(__dirname, "..", "src", "demo.js");
const run = (...args: string[]) => {
  const r = spawnSync(process.execPath, [demo, ...args], { encoding: "utf8", timeout: 20_000, env: { ...process.env, LOOPHOLE_SIGNAL_BIN: "" } });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

test("demo --help / -h: the usage on stdout, exit 0, no engine spawned", () => {
  for (const h of ["--help", "-h", "--duration 3 --help"]) {
    const r = run(...h.split(" "));
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^usage: node dist\/demo\.js \[--duration SECONDS\] \[--bin PATH\]/);
    assert.match(r.out, /--duration SECONDS/);
    assert.equal(r.err, "");
  }
});

test("demo: unknown flags, a missing value and bad durations exit 2 naming the problem", () => {
  for (const [args, why] of [
    [["--durration", "3"], /unknown argument "--durration"/],
    [["extra"], /unknown argument "extra"/],
    [["--duration"], /--duration needs a value/],
    [["--duration", "--bin", "x"], /--duration needs a value/],
    [["--duration", "abc"], /--duration must be a number of seconds > 0 and <= 3600, got "abc"/],
    [["--duration", "0"], /got "0"/],
    [["--duration", "-1"], /got "-1"/],
    [["--duration="], /got ""/],
    [["--duration", "Infinity"], /got "Infinity"/],
    [["--bin"], /--bin needs a value/],
  ] as const) {
    const r = run(...args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.err}`);
    assert.match(r.err, why, args.join(" "));
    assert.match(r.err, /usage: /);
    assert.equal(r.out, "");
  }
});

test("control: valid arguments are taken (parsed values; the run itself then starts, here failing on a missing binary with exit 1, not 2)", () => {
  assert.deepEqual(parseDemoArgs([]), { help: false, durationS: 6, bin: undefined });
  assert.deepEqual(parseDemoArgs(["--duration", "2.5", "--bin", "/x/signal"]), { help: false, durationS: 2.5, bin: "/x/signal" });
  assert.deepEqual(parseDemoArgs(["--duration=4", "--bin=/y"]), { help: false, durationS: 4, bin: "/y" });
  const r = run("--duration", "0.5", "--bin", "/nonexistent/signal");
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /cannot spawn \/nonexistent\/signal/);
});
