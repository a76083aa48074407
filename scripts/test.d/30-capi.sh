#!/usr/bin/env bash
# Section of scripts/test: the C ABI (capi/). Header up to date, exported symbols == documented,
# C11 / C++17 tests of every export, the C++ engine example (warnings as errors, then ASan+UBSan)
# driven end to end by the Rust `aura` example.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
T0=$SECONDS
TARGET=${CARGO_TARGET_DIR:-target}
OUT=$TARGET/capi
mkdir -p "$OUT"

step "capi: tools (cbindgen, a C/C++ compiler, nm, python3)"
need_apt g++ g++
need_apt nm binutils
need_apt python3 python3
if ! command -v cbindgen >/dev/null 2>&1; then
  t=$SECONDS
  cargo install cbindgen --version 0.29.4 --locked --quiet
  echo "cbindgen installed in $((SECONDS - t)) s"
fi

step "capi: the committed header is what cbindgen generates"
(cd capi && cbindgen --config cbindgen.toml --quiet --output "../$OUT/loophole_ipc.regen.h")
if ! diff -u capi/include/loophole_ipc.h "$OUT/loophole_ipc.regen.h"; then
  echo "FAIL: capi/include/loophole_ipc.h is stale: run \`cbindgen --config cbindgen.toml --output include/loophole_ipc.h\` in capi/ and commit" >&2
  exit 1
fi
echo "ok: header up to date"

step "capi: build the static and shared library"
cargo build -p loophole-ipc-capi --quiet
LIB=$TARGET/debug/libloophole_ipc_capi.a
SO=$TARGET/debug/libloophole_ipc_capi.so
NATIVE="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

step "capi: exported symbols == the documented loophole_* functions"
nm -D --defined-only "$SO" | awk '$2 ~ /^[TtWDdBbRr]$/ {print $3}' >"$OUT/exported.txt"
python3 capi/tools/abi_check.py capi/include/loophole_ipc.h "$OUT/exported.txt"
# The static library may carry Rust's own symbols, but its loophole_* set must be the same.
nm -g --defined-only "$LIB" 2>/dev/null | awk '$2 == "T" && $3 ~ /^loophole_/ {print $3}' | sort -u >"$OUT/exported_static.txt"
diff <(sort "$OUT/exported.txt") "$OUT/exported_static.txt"
# Negative controls: an exported symbol missing from the header, and a header function the
# library lacks, must both fail the check.
grep -v 'loophole_audio_report_xrun' capi/include/loophole_ipc.h >"$OUT/missing_decl.h"
if python3 capi/tools/abi_check.py "$OUT/missing_decl.h" "$OUT/exported.txt" >/dev/null; then
  echo "FAIL: the symbol check accepted an exported symbol the header does not declare" >&2
  exit 1
fi
grep -v '^loophole_audio_end$' "$OUT/exported.txt" >"$OUT/missing_sym.txt"
if python3 capi/tools/abi_check.py capi/include/loophole_ipc.h "$OUT/missing_sym.txt" >/dev/null; then
  echo "FAIL: the symbol check accepted a declared function the library does not export" >&2
  exit 1
fi
echo "ok: the symbol check fails on both kinds of mismatch"

step "capi: C11 and C++17 tests of every export"
CWARN="-Wall -Wextra -Werror"
gcc -std=c11 -pedantic $CWARN -Icapi/include capi/tests/test_abi.c "$LIB" $NATIVE -o "$OUT/test_abi_c"
g++ -x c++ -std=c++17 $CWARN -Icapi/include capi/tests/test_abi.c -x none "$LIB" $NATIVE -o "$OUT/test_abi_cxx"
g++ -std=c++17 $CWARN -Icapi/include capi/tests/test_wrapper.cpp "$LIB" $NATIVE -o "$OUT/test_wrapper"
# The shared library too: the C test linked against the .so.
gcc -std=c11 $CWARN -Icapi/include capi/tests/test_abi.c -L"$TARGET/debug" -lloophole_ipc_capi -lm \
  -Wl,-rpath,"$PWD/$TARGET/debug" -o "$OUT/test_abi_so"
# A program built against the first ABI 1 header (frozen copy), linked against today's library.
gcc -std=c11 -pedantic $CWARN -Icapi/tests/abi1 capi/tests/test_abi1.c "$LIB" $NATIVE -o "$OUT/test_abi1"
"$OUT/test_abi1"
"$OUT/test_abi_c"
"$OUT/test_abi_cxx"
"$OUT/test_wrapper"
"$OUT/test_abi_so"

step "capi: analysis (scope/spectrum) through the ABI: a C11 engine, the Rust client, both encodings"
t=$SECONDS
gcc -std=c11 -pedantic $CWARN -Icapi/include capi/tests/test_analysis.c "$LIB" $NATIVE -o "$OUT/test_analysis"
LOOPHOLE_C_ANALYSIS_ENGINE="$PWD/$OUT/test_analysis" \
  cargo test -q -p loophole-ipc-capi --test analysis_c -- --ignored
echo "analysis through the ABI: $((SECONDS - t)) s"

step "capi: the C++ engine example, warnings as errors, then ASan+UBSan"
ENGINE_SRC="-Icapi/include -Icapi/examples/juce_stub capi/examples/signal_cpp/main.cpp"
g++ -std=c++17 -O2 $CWARN $ENGINE_SRC "$LIB" $NATIVE -o "$OUT/signal_cpp"
g++ -std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  -fno-omit-frame-pointer $CWARN $ENGINE_SRC "$LIB" $NATIVE -o "$OUT/signal_cpp_asan"
# The README's embedding sample (the first cpp block of its "Embedding" section) compiles
# with warnings as errors and runs, as written.
# The N-th cpp block of capi/README.md's embedding section.
readme_block() {
  awk -v want="$1" '/^## Embedding in a C\+\+ \/ JUCE engine/ {s=1; next} s && /^## / {exit}
    s && /^```cpp$/ {n++; b = (n == want); next} b && /^```$/ {exit} b' capi/README.md
}
readme_block 1 >"$OUT/readme_sample.inc"
readme_block 2 >"$OUT/readme_startup.inc"
[ "$(wc -l <"$OUT/readme_sample.inc")" -ge 20 ] || { echo "FAIL: README sample not found" >&2; exit 1; }
grep -q '^int main()' "$OUT/readme_startup.inc" || { echo "FAIL: README start-up sample not found" >&2; exit 1; }
g++ -std=c++17 $CWARN -I"$OUT" -Icapi/include -Icapi/examples/juce_stub capi/examples/readme_main.cpp \
  "$LIB" $NATIVE -o "$OUT/readme_sample"
"$OUT/readme_sample"
# ... and the start-up block with it: an engine of its own (run under aura below).
g++ -std=c++17 $CWARN -I"$OUT" -Icapi/include -Icapi/examples/juce_stub capi/examples/readme_startup.cpp \
  "$LIB" $NATIVE -o "$OUT/readme_startup"

step "capi: end to end: aura drives the C++ engine (demo, slow-device control, kill -9 restart)"
cargo build --example aura --example signal --quiet
# The README's start-up sample as an engine: announced (flushed), a ping answered, engine.shutdown
# acked, exit status 0. (Without the fflush, aura gives up after 10 s: no announcement line.)
started=$(timeout 60 "$TARGET/debug/examples/aura" --engine "$PWD/$OUT/readme_startup" --json \
  send ping '{"nonce":1}') || { echo "FAIL: aura could not drive the README engine: $started" >&2; exit 1; }
grep '"event":"engine_stopped"' <<<"$started" | grep -q 'exit status: 0' ||
  { echo "FAIL: the README engine did not exit 0 on engine.shutdown: $started" >&2; exit 1; }
echo "ok: the README's start-up sample runs as an engine under aura"
LOOPHOLE_CPP_ENGINE="$PWD/$OUT/signal_cpp" \
  cargo test -q -p loophole-ipc-capi --test e2e_cpp -- --ignored
# Graph edits: the C++ engine answers each step of a script what `signal` answers (also run).
LOOPHOLE_CPP_ENGINE="$PWD/$OUT/signal_cpp" \
  cargo test -q -p loophole-ipc-capi --test graph_cpp -- --ignored
# The sanitizer build through the demo (a report makes the engine exit non-zero: aura fails).
LOOPHOLE_CPP_ENGINE="$PWD/$OUT/signal_cpp_asan" \
  cargo test -q -p loophole-ipc-capi --test e2e_cpp -- --ignored aura_drives_the_cpp_engine
LOOPHOLE_CPP_ENGINE="$PWD/$OUT/signal_cpp_asan" \
  cargo test -q -p loophole-ipc-capi --test graph_cpp -- --ignored cpp_engine_checks_graph_edits
# ... and its analysis worker (the FFT, the tap histories) through `watch`.
LOOPHOLE_CPP_ENGINE="$PWD/$OUT/signal_cpp_asan" \
  cargo test -q -p loophole-ipc-capi --test e2e_cpp -- --ignored watch_shows_the_cpp_engine_taps

step "capi: bench: the C++ callback through the ABI vs the Rust endpoint (callgrind instructions)"
need_apt valgrind valgrind
cargo bench -p loophole-ipc-capi-rt --bench abi_vs_rust --no-run --quiet
BENCH=$(ls -t "$TARGET"/release/deps/abi_vs_rust-* | grep -v '\.d$' | head -1)
for side in rust abi; do
  ABI_BENCH_ONLY=$side valgrind --tool=callgrind --toggle-collect="*${side}_round*" \
    --callgrind-out-file="$OUT/callgrind.$side" "$BENCH" >/dev/null 2>"$OUT/callgrind.$side.log"
done
python3 - "$OUT/callgrind.rust" "$OUT/callgrind.abi" <<'PY'
import sys
def total(path):
    for line in open(path):
        if line.startswith("totals:"):
            return int(line.split()[1])
    sys.exit(f"no totals in {path}")
rust, abi = total(sys.argv[1]), total(sys.argv[2])
if rust < 2_000_000 or abi < 2_000_000:  # 2000 callbacks: the toggle must have matched
    sys.exit(f"callgrind counted too little (rust {rust}, abi {abi}): toggle-collect missed")
ratio = abi / rust
print(f"abi_vs_rust (callgrind, 2000 callbacks of 16 commands + 64 ch x 64 frames meters): "
      f"Rust {rust} Ir, C++ through the ABI {abi} Ir, ratio {ratio:.4f}x (target <= 1.1x)")
if ratio > 1.1:
    sys.exit("FAIL: the C ABI path costs more than 1.1x the Rust endpoint")
PY
# Wall-clock figure for information (noisy on a shared machine; the gate is the count above).
"$BENCH"

step "capi: section done in $((SECONDS - T0)) s"
