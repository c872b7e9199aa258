#!/usr/bin/env bash
# muster-dns against NSD and Knot, side by side in one run, on the data of
# shared/reference/performance.md §7.2 (10,000 headless services × 10 ready pods, plus services
# with 1, 10, 100 and 250 endpoints). Loopback only (127.0.0.1:5300-5304).
#
#   bench/dns/run.sh                 # everything; DURATION=10 seconds per throughput run
#   SERVERS="muster nsd" bench/dns/run.sh
#   MODE=latency bench/dns/run.sh    # only p50/p99 at 10k qps: all three servers up at once,
#                                    # ROUNDS=5 interleaved rounds of LAT_SECONDS=5 each (~90 s)
#
# Method (performance.md §6.1): each server on one core, dnsperf on the other; the figure that
# compares is the server's CPU per query (utime+stime of its process tree from /proc divided by
# completed queries), qps per core = 1/that. Latency: dnsperf -v at 10k qps offered for 5 s,
# p50/p99 of the per-query times. Memory: muster-dns RSS with the data minus without it.
# Instructions per query: callgrind on the query path alone (examples/qpath.rs).
# Programming latency: a watch event to its IP in the answers (examples/propagation.rs).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-$HERE/work}
DURATION=${DURATION:-10}
SERVERS=${SERVERS:-"muster nsd knot"}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$WORK"
cd "$WORK"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need dnsperf || ! need nsd || ! need knotd || ! need kdig; then
    echo "installing dnsperf, nsd, knot from Debian" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsperf nsd knot knot-dnsutils >/dev/null
fi

[ -f cluster.local.zone ] || python3 "$HERE/gen.py" "$WORK"
# The same build as write_to_answer.sh (muster and every example at once): one feature set,
# so switching between the two scripts rebuilds nothing.
(cd "$ROOT" && cargo build --release -q -p muster -p muster-dns --bin muster --examples)
SERVE="$CARGO_TARGET_DIR/release/examples/serve"
QPATH="$CARGO_TARGET_DIR/release/examples/qpath"
PROPAGATION="$CARGO_TARGET_DIR/release/examples/propagation"

mkdir -p knot/db nsd
cat > knot/knot.conf <<EOF
server:
    rundir: "$WORK/knot"
    listen: 127.0.0.1@5300
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    udp-max-payload: 4096
control:
    listen: "$WORK/knot/knot.sock"
database:
    storage: "$WORK/knot/db"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "$WORK"
    journal-content: none
    zonefile-sync: -1
    semantic-checks: off
zone:
  - domain: cluster.local
    file: "cluster.local.zone"
EOF
cat > nsd/nsd.conf <<EOF
server:
    ip-address: 127.0.0.1@5301
    server-count: 1
    username: ""
    zonesdir: "$WORK"
    database: ""
    pidfile: "$WORK/nsd/nsd.pid"
    xfrdfile: "$WORK/nsd/xfrd.state"
    zonelistfile: "$WORK/nsd/zone.list"
    logfile: "$WORK/nsd/nsd.log"
    reuseport: yes
    ipv4-edns-size: 4096
    rrl-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: cluster.local
    zonefile: cluster.local.zone
EOF

PID=""
cleanup() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

# utime+stime (clock ticks) of a process and all its descendants.
cpu_tree() {
    local total=0 p
    for p in $1 $(descendants "$1"); do
        [ -r /proc/$p/stat ] || continue
        total=$((total + $(sed 's/.*) //' /proc/$p/stat | awk '{print $12+$13}')))
    done
    echo "$total"
}
descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done
}
wait_port() {
    for _ in $(seq 1 1200); do
        if kdig @127.0.0.1 -p "$1" +timeout=1 +retry=0 hs1.default.svc.cluster.local A >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "server on port $1 did not answer" >&2; return 1
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

declare -A US QPS LAT
# throughput NAME PORT CLIENT_CPU QUERYSET dnsperf-args...
throughput() {
    local name=$1 port=$2 ccpu=$3 set=$4; shift 4
    local c0 c1 n
    c0=$(cpu_tree "$PID")
    taskset -c "$ccpu" dnsperf -s 127.0.0.1 -p "$port" "$@" -l "$DURATION" -c 10 -q 256 > "run_${name}_${set}.out" 2>&1
    c1=$(cpu_tree "$PID")
    n=$(awk '/Queries completed/ {print $3}' "run_${name}_${set}.out")
    local size
    size=$(awk '/Average packet size/ {print $NF}' "run_${name}_${set}.out")
    US[$name,$set]=$(awk -v d=$((c1 - c0)) -v n="$n" -v t="$TICK_US" 'BEGIN {printf "%.2f", d * t / n}')
    QPS[$name,$set]=$(awk '/Queries per second/ {printf "%d", $4}' "run_${name}_${set}.out")
    printf '%-7s %-5s %8s us/query  %7s qps achieved  response %s\n' "$name" "$set" "${US[$name,$set]}" "${QPS[$name,$set]}" "$size"
}
# p50/p99 at 10k qps offered, 5 s per run, 3 runs; the medians are reported (the VM's tail is noisy).
latency() {
    local name=$1 port=$2 ccpu=$3 r
    for r in 1 2 3; do
        taskset -c "$ccpu" dnsperf -s 127.0.0.1 -p "$port" -e -d qmix.txt -l 5 -Q 10000 -c 10 -q 256 -v > "lat_$name.raw" 2>&1 || true
        grep -E '^> .* [0-9.]+$' "lat_$name.raw" | awk '{print $NF}' | sort -g > "lat_$name.sorted"
        awk '{v[NR]=$1} END {if (NR) printf "%.0f %.0f\n", v[int(NR*.5)]*1e6, v[int(NR*.99)]*1e6}' "lat_$name.sorted"
    done > "lat_$name.runs"
    local p50 p99 all
    p50=$(cut -d' ' -f1 "lat_$name.runs" | sort -n | sed -n 2p)
    p99=$(cut -d' ' -f2 "lat_$name.runs" | sort -n | sed -n 2p)
    all=$(cut -d' ' -f2 "lat_$name.runs" | paste -sd/)
    LAT[$name]="p50=${p50}us p99=${p99}us (median of 3 runs; p99s ${all}us)"
    echo "$name latency at 10k qps (qmix): ${LAT[$name]}"
}
bench_server() {
    local name=$1 port=$2 ccpu=$3
    wait_port "$port"
    local check
    check=$(kdig @127.0.0.1 -p "$port" hs250.default.svc.cluster.local A +bufsize=4096 +notcp | grep -c 'IN\s*A\s' || true)
    echo "$name: hs250 answers $check A records over UDP with EDNS 4096"
    for set in q1 q100 q250; do
        throughput "$name" "$port" "$ccpu" "$set" -B -d "${set}_edns4096.bin"
    done
    throughput "$name" "$port" "$ccpu" qmix -e -d qmix.txt
    latency "$name" "$port" "$ccpu"
}

if [ "${MODE:-all}" = latency ]; then
    ROUNDS=${ROUNDS:-5}
    LAT_SECONDS=${LAT_SECONDS:-5}
    declare -A PORT=([muster]=5304 [nsd]=5301 [knot]=5300) CCPU=([muster]=0 [nsd]=0 [knot]=1)
    PIDS=()
    rm -f lat_*.us
    cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
    taskset -c 1 "$SERVE" --data objects.json --listen 127.0.0.1:5304 --workers 1 2> muster.log & PIDS+=($!)
    taskset -c 1 nsd -d -c nsd/nsd.conf 2> nsd.log & PIDS+=($!)
    knotd -c knot/knot.conf 2> knot.log & PIDS+=($!)
    for server in $SERVERS; do wait_port "${PORT[$server]}"; done
    # Per-query latencies (µs) of one dnsperf run at 10k qps offered, one per line, sorted.
    lat_run() {
        local name=$1 round=$2
        taskset -c "${CCPU[$name]}" dnsperf -s 127.0.0.1 -p "${PORT[$name]}" -e -d qmix.txt -l "$LAT_SECONDS" \
            -Q 10000 -c 10 -q 256 -v > "lat_${name}_$round.raw" 2>&1 || true
        grep -E '^> .* [0-9.]+$' "lat_${name}_$round.raw" | awk '{printf "%.1f\n", $NF * 1e6}' | sort -g > "lat_${name}_$round.us"
    }
    # p50 p90 p99 p99.9 max count of a sorted file.
    pcts() { awk '{v[NR]=$1} END {if (!NR) {print "- - - - - 0"; exit}
        q = "0.5 0.9 0.99 0.999"; n = split(q, p, " ")
        for (i = 1; i <= n; i++) { k = int(NR * p[i] + 0.999999); if (k < 1) k = 1; printf "%s ", v[k] }
        printf "%s %d\n", v[NR], NR}' "$1"; }
    echo "## latency at 10k qps offered (qmix, EDNS), $(date -u '+%F %T') UTC, $(uptime | sed 's/.*load/load/')"
    echo "Each server on CPU 1 (Knot pins itself to CPU 0; its client then runs on CPU 1), dnsperf on the other CPU;"
    echo "$ROUNDS rounds × ${LAT_SECONDS}s per server, servers interleaved within each round. Times in µs."
    echo
    echo "| round | server | p50 | p90 | p99 | p99.9 | max | answered | load (1 min) |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for round in $(seq 1 "$ROUNDS"); do
        for server in $SERVERS; do
            lat_run "$server" "$round"
            read -r a b c d e n < <(pcts "lat_${server}_$round.us")
            echo "| $round | $server | $a | $b | $c | $d | $e | $n | $(cut -d' ' -f1 /proc/loadavg) |"
        done
    done
    echo
    echo "All rounds pooled:"
    echo
    echo "| server | p50 | p90 | p99 | p99.9 | max | answered | p99 of each round |"
    echo "|---|---|---|---|---|---|---|---|"
    for server in $SERVERS; do
        sort -g lat_"${server}"_[0-9]*.us > "lat_${server}_all.us"
        read -r a b c d e n < <(pcts "lat_${server}_all.us")
        per=$(for r in $(seq 1 "$ROUNDS"); do pcts "lat_${server}_$r.us" | cut -d' ' -f3; done | paste -sd/)
        echo "| $server | $a | $b | $c | $d | $e | $n | $per |"
    done
    exit 0
fi

for server in $SERVERS; do
    case $server in
    muster)
        taskset -c 1 "$SERVE" --data objects.json --listen 127.0.0.1:5304 --workers 1 2> muster.log & PID=$!
        bench_server muster 5304 0 ;;
    nsd)
        taskset -c 1 nsd -d -c nsd/nsd.conf 2> nsd.log & PID=$!
        bench_server nsd 5301 0 ;;
    knot)
        # Knot pins its UDP worker to CPU 0 itself: the client goes on CPU 1.
        knotd -c knot/knot.conf 2> knot.log & PID=$!
        bench_server knot 5300 1 ;;
    esac
    cleanup; PID=""
done

# Memory: the same binary with and without the data.
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
"$SERVE" --empty --listen 127.0.0.1:5304 2>/dev/null & PID=$!
sleep 1; RSS_EMPTY=$(rss "$PID"); cleanup; PID=""
"$SERVE" --data objects.json --listen 127.0.0.1:5304 2>/dev/null & PID=$!
wait_port 5304; sleep 1; RSS_FULL=$(rss "$PID"); cleanup; PID=""
echo "muster-dns RSS: ${RSS_EMPTY} kB empty, ${RSS_FULL} kB with the data: +$(( (RSS_FULL - RSS_EMPTY) / 1024 )) MB"

# Instructions per query on the query path: (Ir(N2) - Ir(N1)) / (N2 - N1) cancels the setup.
declare -A IR
if need valgrind; then
    for set in q1 q100 q250 qmix; do
        ir() {
            valgrind --tool=callgrind --callgrind-out-file="cg.$set.$1" "$QPATH" "$1" "$set" >/dev/null 2>&1
            awk '/^summary:|^totals:/ {print $2; exit}' "cg.$set.$1"
        }
        a=$(ir 2000); b=$(ir 12000)
        IR[$set]=$(( (b - a) / 10000 ))
        echo "callgrind $set: ${IR[$set]} instructions per query"
    done
fi

# Watch event -> visible in answers, 200 slice changes through the kube watcher (mock API).
PROP=$("$PROPAGATION" 200 2>/dev/null || echo "failed")
echo "$PROP"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a && b) printf "%.2f", a / b; else print "-" }'; }
{
    echo "## DNS benchmark ($(date -u +%F), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
    echo
    echo "Server CPU per query (µs) → qps per core; ratio = muster / reference (lower is better). ${DURATION}s per run."
    echo
    echo "| set | muster | NSD | Knot | muster/NSD | muster/Knot |"
    echo "|---|---|---|---|---|---|"
    for set in q1 q100 q250 qmix; do
        m=${US[muster,$set]:-}; n=${US[nsd,$set]:-}; k=${US[knot,$set]:-}
        per() { [ -n "$1" ] && awk -v u="$1" 'BEGIN {printf "%s µs → %dk", u, 1000 / u}' || echo "-"; }
        echo "| $set | $(per "$m") | $(per "$n") | $(per "$k") | $(ratio "$m" "$n") | $(ratio "$m" "$k") |"
    done
    echo
    echo "Latency at 10k qps offered (qmix): muster ${LAT[muster]:-} · NSD ${LAT[nsd]:-} · Knot ${LAT[knot]:-}"
    echo
    echo "muster-dns memory: ${RSS_EMPTY} kB without data, ${RSS_FULL} kB with it (+$(( (RSS_FULL - RSS_EMPTY) / 1024 )) MB)"
    echo
    echo "DNS programming latency ($PROP; API server latency not included)"
    echo
    echo "callgrind instructions per query (query path only): q1 ${IR[q1]:-} · q100 ${IR[q100]:-} · q250 ${IR[q250]:-} · qmix ${IR[qmix]:-}"
} | tee results.md
