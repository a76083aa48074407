#!/usr/bin/env bash
# The TypeScript client package (clients/typescript, npm `@loophole/ipc`): types regenerated from
# the schemas must match the committed ones; tsc --strict; node:test suites (vectors both ways,
# fake engine, supervisor, and the real `signal` binary, which this section builds).
set -euo pipefail
. scripts/lib.sh

need_apt node nodejs npm
need_apt npm npm
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "clients/typescript needs Node >= 20 (package.json engines); this machine has $(node --version)" >&2
  exit 1
fi

step "typescript: signal example binary (release)"
cargo build --release --example signal

cd clients/typescript
step "typescript: npm ci"
npm ci --no-audit --no-fund --loglevel=error

step "typescript: generated types match docs/specs/ipc/schemas"
npm run --silent gen:check

step "typescript: tsc --strict (package and tests) and node --test"
LOOPHOLE_REQUIRE_SIGNAL=1 npm test --silent
