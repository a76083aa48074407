#!/usr/bin/env bash
# Section of the "spec" room: the generated spec files match their generators, and the example
# engine's own tests run (cargo test --workspace builds examples but runs none of their tests):
# graph checks, --port 0, connection-file errors, the 2^53 - 1 position clamp.
set -euo pipefail
. scripts/lib.sh

step "spec: schemas and vectors match their generators"
need_apt python3 python3
python3 docs/specs/ipc/schemas/make_schemas.py --check
python3 docs/specs/ipc/vectors/make_vectors.py --check

step "spec: example engine unit tests (graph checks, CLI, position clamp)"
cargo test --example signal
