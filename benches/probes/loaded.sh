#!/usr/bin/env bash
# Runs a command on a loaded machine: LOOPHOLE_HOGS (default: one per CPU) busy loops at nice
# LOOPHOLE_HOG_NICE (default 0), unpinned, for as long as the command runs. The load is the same
# from run to run, unlike a build in the background. Prints the load average before and after.
# Each loop also ends by itself after LOOPHOLE_HOG_SECONDS (default 1800), should this script be
# killed before its trap runs.
#   bash benches/probes/loaded.sh env LOOPHOLE_BENCH_SECTIONS=applied target/release/deps/stack-<hash> --bench
set -euo pipefail
[[ $# -gt 0 ]] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
n="${LOOPHOLE_HOGS:-$(nproc)}"
nice_level="${LOOPHOLE_HOG_NICE:-0}"
limit="${LOOPHOLE_HOG_SECONDS:-1800}"
hogs=()
trap 'kill "${hogs[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq "$n"); do
  nice -n "$nice_level" timeout "$limit" bash -c 'while :; do :; done' &
  hogs+=("$!")
done
echo "loaded.sh: $n busy loops at nice $nice_level; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
status=0
"$@" || status=$?
echo "loaded.sh: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$status"
