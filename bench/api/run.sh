#!/usr/bin/env bash
# API-level benchmark of `muster apiserver` over HTTPS (release build), with the store alone
# and the raw fsync measured in the same run as references; then `muster up` → /readyz
# (bench/startup.sh). Prints a summary table. Bounded: about 2–4 minutes on 2 cores.
#
# Usage: bench/api/run.sh [--quick] [--pods N]
#   MUSTER_APISERVER_ARGS="--store etcd --etcd-endpoints http://127.0.0.1:2379" bench/api/run.sh
#   STARTUP_RUNS=5 (runs of bench/startup.sh; 0 skips it)
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p muster >&2
# The harness (crates/muster-apiserver/benches/api.rs) is built with the bench profile.
cargo bench -p muster-apiserver --bench api --no-run >&2
harness=$(ls -t "$target"/release/deps/api-* | grep -v '\.d$' | head -1)
echo "== uptime: $(uptime)"
timeout 600 "$harness" "$target/release/muster" "$@"
runs=${STARTUP_RUNS:-5}
if [ "$runs" -gt 0 ]; then
  echo
  echo "== muster up --no-agent → /readyz (bench/startup.sh $runs)"
  bench/startup.sh "$runs"
fi
echo "== uptime: $(uptime)"
