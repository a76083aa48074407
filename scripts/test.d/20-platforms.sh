#!/usr/bin/env bash
# Platforms (issue 11): the workspace is linted for Windows and both macOS targets, and the
# Windows build is RUN under Wine: the library's unit tests, every tests/net_* binary, and the
# end-to-end demo (aura spawning signal). Wine proves correctness, never Windows timing.
# Installs what it needs: the rust targets, MinGW, Wine, jq. docs/platforms.md says more.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
started=$SECONDS

TARGETS=(x86_64-pc-windows-gnu x86_64-apple-darwin aarch64-apple-darwin)
WIN=x86_64-pc-windows-gnu

step "platforms: rust targets ${TARGETS[*]}"
rustup target add "${TARGETS[@]}" >/dev/null

step "platforms: clippy for every target (workspace, default features, warnings denied)"
# capi/rt-proof is excluded: a Linux-only proof (seccomp, a malloc interposer) whose build.rs
# compiles C++ against Linux headers; there is no macOS C++ toolchain on Linux either.
for t in "${TARGETS[@]}"; do
  echo "-- $t"
  cargo clippy --workspace --exclude loophole-ipc-capi-rt --all-targets --target "$t" -- -D warnings
done

step "platforms: MinGW and Wine"
need_apt x86_64-w64-mingw32-gcc gcc-mingw-w64-x86-64
need_apt wine wine wine64
need_apt jq jq
export WINEPREFIX="${LOOPHOLE_WINEPREFIX:-$PWD/target/wine-prefix}"
export WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree,mshtml=" # no Mono/Gecko installer prompts in a fresh prefix
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
trap 'wineserver -k 2>/dev/null || true' EXIT # leave no Wine server behind, pass or fail
if [ ! -d "$WINEPREFIX/drive_c/windows/system32" ]; then
  wineboot -i >/dev/null 2>&1 || true
fi
sys32="$WINEPREFIX/drive_c/windows/system32"
[ -d "$sys32" ] || { echo "FAIL: no Wine prefix at $WINEPREFIX" >&2; exit 1; }
# Rust's std imports ProcessPrng from bcryptprimitives.dll; Debian's Wine 8 has none.
x86_64-w64-mingw32-gcc -shared -O2 -Wall -Wextra -Werror \
  -o "$sys32/bcryptprimitives.dll" tools/wine/bcryptprimitives.c tools/wine/bcryptprimitives.def \
  -ladvapi32

step "platforms: Windows tests under Wine (library, tests/net_*)"
net_tests=()
for f in tests/net_*.rs; do net_tests+=(--test "$(basename "$f" .rs)"); done
# Skipped under Wine (it stays in the Windows build; docs/platforms.md lists it):
# - idle_engine_keeps_draining_transport_telemetry: Wine's reason. Its simulated audio thread
#   sleeps 1 ms per callback and must reach 500 callbacks in 1 s; Wine's sleeps overshoot by
#   0.2-1.5 ms (benches/wake.rs), so it makes ~430.
# The four once skipped for an unknown cause run again: two were the tests' own races, one an
# eviction of a client whose hello was still unread (fixed), see docs/platforms.md.
WINE_SKIP=(
  --skip idle_engine_keeps_draining_transport_telemetry
)
# One persistent wineserver for the whole section (the trap above kills it). Wine starts its
# server with `-p0` (it exits with its last client), so between two test binaries a server
# that is exiting can meet the next binary's start: "wine client error:0: recvmsg: Connection
# reset by peer", which failed a binary before any test ran (seen once in ~60 runs here).
wineserver -k 2>/dev/null || true
wineserver -p
cargo test -p loophole-ipc --target "$WIN" --lib "${net_tests[@]}" -- "${WINE_SKIP[@]}"

step "platforms: Windows end-to-end demo under Wine (aura spawning signal)"
cargo build -p loophole-ipc --target "$WIN" --example aura --example signal
ex="${CARGO_TARGET_DIR:-target}/$WIN/debug/examples"
out=$(mktemp)
if ! timeout 120 wine "$ex/aura.exe" --engine "$ex/signal.exe" --json demo --duration 3 >"$out"; then
  echo "FAIL: aura demo under Wine" >&2
  tail -20 "$out" >&2
  exit 1
fi
# The same conditions as tests/e2e.rs's demo_end_to_end, on the summary aura prints.
demo_ok='
  (map(select(.event == "summary")) | last) as $s
  | (map(select(.event == "engine_stopped")) | last) as $stop
  | $s != null and $s.errors == 0 and $s.lost == 0 and $s.unanswered == 0 and $s.restarts == 0
    and $s.commands_sent >= 20 and $s.acks == $s.commands_sent
    and $s.telemetry.meters >= 30
    and ($stop.how | startswith("exited by itself"))'
if ! jq -es "$demo_ok" "$out" >/dev/null; then
  echo "FAIL: the demo's summary under Wine:" >&2
  grep -E '"event":"(summary|engine_stopped)"' "$out" >&2 || tail -5 "$out" >&2
  exit 1
fi
# Negative control: the same run with one lost command must be refused by the check.
if jq -c 'if .event == "summary" then .lost = 1 else . end' "$out" | jq -es "$demo_ok" >/dev/null; then
  echo "FAIL: the demo check accepts a summary with a lost command" >&2
  exit 1
fi
grep -E '"event":"summary"' "$out" | jq -c '{commands_sent, acks, lost, errors, latency_us}'
rm -f "$out"

echo "platforms section: $((SECONDS - started)) s"
