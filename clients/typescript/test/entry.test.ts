// ESM and CJS entry points: one implementation, so classes are shared across both.
import "./helpers";
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const pkgDir = resolve(__dirname, "..", "..");

test("import and require give the same classes; the ESM wrapper exports every CJS export", () => {
  const out = execFileSync(process.execPath, [resolve(pkgDir, "test", "fixtures", "entry-check.mjs")], { cwd: pkgDir, encoding: "utf8" });
  const r = JSON.parse(out);
  assert.equal(r.sameClass, true);
  assert.equal(r.instanceofAcross, true);
  assert.equal(r.defaultIsCjs, true);
  assert.deepEqual(r.missing, [], "add these to index.mjs");
  assert.ok(r.esmKeys > 10);
});

test("package.json: exports with types first, engines, no runtime dependencies", () => {
  const pkg = JSON.parse(readFileSync(resolve(pkgDir, "package.json"), "utf8"));
  assert.deepEqual(Object.keys(pkg.exports["."]), ["types", "import", "require"]);
  assert.equal(pkg.engines.node, ">=20");
  assert.equal(pkg.dependencies, undefined);
  assert.deepEqual(Object.keys(pkg.devDependencies).sort(), ["@types/node", "typescript"]);
});

test("installable from this repository: `npm pack` then `npm install <tarball>` into an empty project (offline: no runtime dependency); require and import work there, the types ship, src and tests do not", { timeout: 60_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "loophole-pack-"));
  try {
    // dist/ is built by `npm test` (prepack would build it again: --ignore-scripts).
    const npm = process.platform === "win32" ? "npm.cmd" : "npm";
    const packed = JSON.parse(execFileSync(npm, ["pack", "--json", "--ignore-scripts", "--pack-destination", work, "--loglevel=error"], { cwd: pkgDir, encoding: "utf8", shell: process.platform === "win32" }));
    const files = (packed[0].files as Array<{ path: string }>).map((f) => f.path);
    for (const f of ["package.json", "README.md", "index.mjs", "dist/index.js", "dist/index.d.ts", "dist/client.d.ts"]) assert.ok(files.includes(f), `${f} in the tarball`);
    assert.deepEqual(files.filter((f) => /^(src|test|build|node_modules)\//.test(f)), []);
    const app = join(work, "app");
    mkdirSync(app);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", version: "1.0.0", private: true }));
    execFileSync(npm, ["install", "--offline", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error", join(work, packed[0].filename)], { cwd: app, encoding: "utf8", shell: process.platform === "win32" });
    const out = execFileSync(process.execPath, ["--input-type=module", "-e", `import * as esm from "@loophole/ipc"; import { createRequire } from "node:module"; const cjs = createRequire(import.meta.url + "/")("@loophole/ipc"); console.log(JSON.stringify({ same: esm.EngineClient === cjs.EngineClient, client: typeof cjs.EngineClient }));`], { cwd: app, encoding: "utf8" });
    assert.deepEqual(JSON.parse(out), { same: true, client: "function" });
    const dep = JSON.parse(readFileSync(join(app, "package.json"), "utf8")).dependencies["@loophole/ipc"];
    assert.match(dep, /^file:.*loophole-ipc-\d+\.\d+\.\d+\.tgz$/);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
