#!/usr/bin/env bash
# Write-to-answer latency through muster's own API server (issue 5's bar: p99 < 20 ms over 200
# writes): an EndpointSlice PUT acknowledged by the API → the new IP in the DNS answers.
#
#   bench/dns/write_to_answer.sh            # WRITES=200 RUNS=3
#
# Starts the release `muster up --no-agent` on loopback (fresh data dir, DNS upstream 127.0.0.1:9
# so nothing leaves the machine), runs crates/muster-dns/examples/write_to_answer.rs against it
# RUNS times, and stops it. Each run prints p50/p90/p99/max of: the PUT round trip, the API's own
# watch delivery of the same write (the reference, from a separate watcher), ack → answer and
# sent → answer, and the ratio of sent → answer to the watch delivery. Bounded: each write gives
# up after 2 s, each run after 10 minutes (`timeout`).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WRITES=${WRITES:-200}
RUNS=${RUNS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# One invocation: the binary and the example with the same feature set (no rebuild ping-pong).
(cd "$ROOT" && cargo build --release -q -p muster -p muster-dns --bin muster --examples)
MUSTER="$CARGO_TARGET_DIR/release/muster"
W2A="$CARGO_TARGET_DIR/release/examples/write_to_answer"

DATA=$(mktemp -d /tmp/muster-w2a.XXXXXX)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$DATA"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API_PORT=$(free_port)
DNS_PORT=$(free_port)
"$MUSTER" --log warn up --no-agent --data-dir "$DATA/data" --api-listen "127.0.0.1:$API_PORT" \
    --dns-listen "127.0.0.1:$DNS_PORT" --dns-upstream 127.0.0.1:9 2> "$DATA/muster.log" &
PID=$!
for _ in $(seq 1 300); do
    [ -f "$DATA/data/kubeconfig" ] && kdig @127.0.0.1 -p "$DNS_PORT" +timeout=1 +retry=0 \
        kubernetes.default.svc.cluster.local A 2>/dev/null | grep -q NOERROR && break
    kill -0 "$PID" 2>/dev/null || { cat "$DATA/muster.log" >&2; exit 1; }
    sleep 0.1
done

echo "## write-to-answer through muster's API ($(date -u '+%F %T') UTC; $(uptime | sed 's/.*load/load/'))"
echo
for r in $(seq 1 "$RUNS"); do
    echo "### run $r"
    timeout 600 "$W2A" --kubeconfig "$DATA/data/kubeconfig" --dns "127.0.0.1:$DNS_PORT" --writes "$WRITES"
    echo
done
