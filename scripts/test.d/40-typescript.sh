#!/usr/bin/env bash
# The TypeScript client package (clients/typescript, npm `@loophole/ipc`): types regenerated from
# the schemas must match the committed ones; tsc --strict; node:test suites (vectors both ways,
# fake engine, supervisor, the real `signal` binary, which this section builds, and the C++ engine
# example of capi/ (target/capi/signal_cpp from 30-capi.sh, which runs first; built here if absent);
# analysis streams and binary attachments (issue 14) against the fake engine, the vectors and signal.
set -euo pipefail
. scripts/lib.sh

need_apt node nodejs npm
need_apt npm npm
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "clients/typescript needs Node >= 20 (package.json engines); this machine has $(node --version)" >&2
  exit 1
fi

# The tests use the debug `signal` that `cargo test --workspace` already built (as the Rust e2e
# tests do): a release build would compile every dependency again for nothing CI measures.
# `npm run demo` and `npm run bench` default to the release binary.
step "typescript: signal example binary (debug, from cargo test)"
cargo build --example signal --quiet
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$PWD/$TARGET_DIR ;; esac
export LOOPHOLE_SIGNAL_BIN=$TARGET_DIR/debug/examples/signal

step "typescript: the C++ engine example (from 30-capi.sh; built here when that section did not run)"
TARGET=${CARGO_TARGET_DIR:-target}
case $TARGET in /*) ;; *) TARGET=$PWD/$TARGET ;; esac
export LOOPHOLE_CPP_ENGINE=$TARGET/capi/signal_cpp LOOPHOLE_REQUIRE_CPP_ENGINE=1
if [ ! -x "$LOOPHOLE_CPP_ENGINE" ]; then
  need_apt g++ g++
  cargo build -p loophole-ipc-capi --quiet
  mkdir -p "$TARGET/capi"
  g++ -std=c++17 -O2 -Icapi/include -Icapi/examples/juce_stub capi/examples/signal_cpp/main.cpp \
    "$TARGET/debug/libloophole_ipc_capi.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o "$LOOPHOLE_CPP_ENGINE"
fi

# The analysis tests (scope/spectrum, issue 14) skip, saying so, against a `signal` whose welcome
# has no `taps`. Once examples/signal.rs has the analysis worker, the binary built from it must
# announce taps: a skip then would hide a regression, so it is required.
if grep -q "analysis_worker" examples/signal.rs; then export LOOPHOLE_REQUIRE_ANALYSIS=1; fi

cd clients/typescript
step "typescript: npm ci"
npm ci --no-audit --no-fund --loglevel=error

step "typescript: generated types match docs/specs/ipc/schemas"
npm run --silent gen:check

step "typescript: tsc --strict (package and tests) and node --test"
LOOPHOLE_REQUIRE_SIGNAL=1 npm test --silent
