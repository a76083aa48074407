#!/usr/bin/env bash
# Short fuzz run of both targets (fuzz/): the frame/message decoder and the sans-I/O Session
# model (invariants: fuzz/fuzz_targets/session_model.rs). Built on stable without a sanitizer
# (`--sanitizer none`; the ASan build needs nightly: `cargo +nightly fuzz run session`).
# The repository corpus (fuzz/corpus/<target>) is read; new inputs go to target/fuzz-corpus/,
# which a CI cache may keep between runs. FUZZ_SECONDS (default 30) per target.
# The same model also runs under plain `cargo test` (tests/session_model.rs: corpus + seeds).
set -euo pipefail
. scripts/lib.sh

t0=$(date +%s)
secs=${FUZZ_SECONDS:-30}

if ! cargo fuzz --version >/dev/null 2>&1; then
  step "install cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
t1=$(date +%s)

step "fuzz build (stable, no sanitizer)"
(cd fuzz && cargo +stable fuzz build --sanitizer none)
t2=$(date +%s)

for target in decoder session; do
  step "fuzz $target for ${secs}s"
  mkdir -p "target/fuzz-corpus/$target"
  (cd fuzz && cargo +stable fuzz run --sanitizer none "$target" \
    "../target/fuzz-corpus/$target" "corpus/$target" -- \
    -max_total_time="$secs" -print_final_stats=1)
done
t3=$(date +%s)

echo "fuzz section: install $((t1 - t0)) s, build $((t2 - t1)) s, runs $((t3 - t2)) s, total $((t3 - t0)) s"
