#!/usr/bin/env bash
# Time from exec of `muster up --no-agent` on a fresh data dir to `/readyz` answering ok
# (API server, controllers and DNS all ready), and again on the same dir (restart).
# Reference in the same run: exec of `muster --version` to exit (process start + exit).
# Usage: bench/startup.sh [RUNS]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
cargo build --release -p muster >&2
bin=${CARGO_TARGET_DIR:-target}/release/muster
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

now_ms() { date +%s%3N; }
wait_ready() { # $1: port
  until curl -skf "https://127.0.0.1:$1/readyz" >/dev/null 2>&1; do sleep 0.002; done
}
measure() { # $1: data dir; prints ms to ready
  local port=$((20000 + RANDOM % 20000)) dns=$((20000 + RANDOM % 20000)) t0 pid
  t0=$(now_ms)
  "$bin" up --data-dir "$1" --no-agent --api-listen 127.0.0.1:$port --dns-listen 127.0.0.1:$dns \
    --dns-upstream 127.0.0.1:9 2>/dev/null & pid=$!
  wait_ready $port
  echo $(( $(now_ms) - t0 ))
  kill -TERM $pid; wait $pid 2>/dev/null || true
}
pct() { sort -n | awk -v p="$1" '{v[NR]=$1} END {print v[int((NR-1)*p)+1]}'; }
fresh=(); again=(); ref=()
for i in $(seq "$runs"); do
  d="$work/$i"; mkdir -p "$d"
  fresh+=("$(measure "$d")")
  again+=("$(measure "$d")")
  t0=$(now_ms); "$bin" --version >/dev/null; ref+=("$(( $(now_ms) - t0 ))")
done
printf 'runs=%s\n' "$runs"
printf 'reference (muster --version):   p50 %s ms\n' "$(printf '%s\n' "${ref[@]}" | pct 0.5)"
printf 'up to /readyz, fresh data dir:   p50 %s ms  p90 %s ms  max %s ms\n' \
  "$(printf '%s\n' "${fresh[@]}" | pct 0.5)" "$(printf '%s\n' "${fresh[@]}" | pct 0.9)" "$(printf '%s\n' "${fresh[@]}" | pct 1)"
printf 'up to /readyz, restart same dir: p50 %s ms  p90 %s ms  max %s ms\n' \
  "$(printf '%s\n' "${again[@]}" | pct 0.5)" "$(printf '%s\n' "${again[@]}" | pct 0.9)" "$(printf '%s\n' "${again[@]}" | pct 1)"
