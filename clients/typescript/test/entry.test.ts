// ESM and CJS entry points: one implementation, so classes are shared across both.
import "./helpers";
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

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
