#!/usr/bin/env bash
# Section 3 of benches/stack.rs with scsynth measured in the same run (issue 9's comparison):
# a dummy JACK device at 128 frames / 48 kHz (the simulated device's period) pinned to the audio
# CPU (LOOPHOLE_BENCH_AUDIO_CPU, default 1) like the simulated audio thread, scsynth on it
# unpinned (its threads all share one name, so its audio thread cannot be pinned apart from its
# network and reply threads; SCSYNTH_CPU=<n> pins the whole process), then
# `LOOPHOLE_BENCH_SECTIONS=applied` with LOOPHOLE_BENCH_SCSYNTH set.
#   bash benches/probes/scsynth.sh                # SCHED_OTHER everywhere (jackd --no-realtime)
#   LOOPHOLE_BENCH_AUDIO_FIFO=80 bash benches/probes/scsynth.sh   # jackd -R -P 80 too
# Needs Debian's supercollider-server and jackd2 (installed here when missing, as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v scsynth >/dev/null || ! command -v jackd >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends supercollider-server jackd2
fi
cpu="${LOOPHOLE_BENCH_AUDIO_CPU:-1}"
port=57117
if [[ -n "${LOOPHOLE_BENCH_AUDIO_FIFO:-}" ]]; then
  rt=(-R -P "$LOOPHOLE_BENCH_AUDIO_FIFO")
else
  rt=(--no-realtime)
fi
export JACK_DEFAULT_SERVER="loophole-bench-$$"
taskset -c "$cpu" jackd "${rt[@]}" -d dummy -r 48000 -p 128 >/tmp/loophole-jackd.log 2>&1 &
jack=$!
sc=
trap 'kill ${sc:-} ${jack:-} 2>/dev/null || true; wait 2>/dev/null || true' EXIT
sleep 1
pin=()
[[ -n "${SCSYNTH_CPU:-}" ]] && pin=(taskset -c "$SCSYNTH_CPU")
"${pin[@]}" scsynth -u "$port" -z 64 -i 0 -o 2 >/tmp/loophole-scsynth.log 2>&1 &
sc=$!
for _ in $(seq 50); do grep -q "server ready" /tmp/loophole-scsynth.log && break; sleep 0.1; done
grep -q "server ready" /tmp/loophole-scsynth.log || { cat /tmp/loophole-scsynth.log; exit 1; }
echo "jackd: $(grep -m1 -o 'realtime mode\|non-realtime mode' /tmp/loophole-jackd.log || true); scsynth: $(grep -m1 'block size' /tmp/loophole-scsynth.log)"
LOOPHOLE_BENCH_SCSYNTH="127.0.0.1:$port" LOOPHOLE_BENCH_SECTIONS=applied cargo bench --bench stack "$@"
