#!/usr/bin/env bash
# Analysis streams (issue 14, item 2): the loom model of the worker -> network-thread mailbox
# (a hand-written triple buffer) and its negative control on the REAL code with the hand-over
# swaps weakened to Relaxed. The end-to-end tests (tests/analysis.rs) run with the workspace's
# `cargo test` in scripts/test. Reuses the loom target directories of the other loom checks.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

step "loom: the analysis mailbox never hands over a torn value"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p rt-tests --test loom_analysis --release

step "loom negative control: the analysis mailbox with Relaxed hand-overs must be caught"
if out=$(RUST_BACKTRACE=0 RUSTFLAGS="--cfg loom --cfg loophole_weak_ordering" \
      CARGO_TARGET_DIR=target/loom-weak timeout 900 \
      cargo test -p rt-tests --test loom_analysis --release 2>&1); then
  echo "FAIL: loom passed the weakened mailbox; the model check proves nothing" >&2
  exit 1
fi
if ! grep -q "^test the_network_side_only_takes_whole_values \.\.\. FAILED" <<<"$out"; then
  echo "FAIL: the weakened build did not fail the model (or failed to build):" >&2
  echo "$out" | tail -30 >&2
  exit 1
fi
echo "ok: loom catches the weakened mailbox"
