#!/usr/bin/env bash
# Who uses the CPU during a throughput phase of `tribune-bench cluster`:
# the three servers (Tribune or etcd) and the load generator, as shares of
# one core, and the servers' CPU time per acknowledged write. Reads
# /proc/PID/stat over a window inside the measured phase.
#
#   cargo build --release -p tribune-server -p tribune-bench
#   bash scripts/bench-cpu-share.sh [--store tribune|etcd] [--clients 64] [--duration 10] [--tribune-bin PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=tribune
CLIENTS=64
DURATION=10
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --store) STORE=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --tribune-bin) EXTRA=(--tribune-bin "$2"); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
BENCH=target/release/tribune-bench
[ -x "$BENCH" ] || { echo "no $BENCH: cargo build --release -p tribune-server -p tribune-bench" >&2; exit 1; }
[ "$DURATION" -ge 6 ] || { echo "--duration must be at least 6 (seconds)" >&2; exit 2; }
case "$STORE" in
  tribune) SERVERS=' agent --server' ;;
  etcd) SERVERS='etcd --name' ;;
  *) echo "--store is tribune or etcd" >&2; exit 2 ;;
esac
LOG=$(mktemp)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -f "$LOG"' EXIT
"$BENCH" cluster "${EXTRA[@]}" --stores "$STORE" --clients "$CLIENTS" --duration "${DURATION}s" --failover-rounds 0 \
  > "$LOG" 2>&1 &
BENCH_PID=$!
# The phase starts with 2 s of warm-up; measure inside the window after it.
until grep -q "clients \.\.\." "$LOG"; do
  kill -0 "$BENCH_PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.2
done
sleep 3
WINDOW=$((DURATION - 3))
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
mapfile -t PIDS < <(pgrep -f -- "$SERVERS")
[ "${#PIDS[@]}" -gt 0 ] || { echo "no $STORE servers found" >&2; exit 1; }
idle() { awk '/^cpu /{print $5 + $6; exit}' /proc/stat; }
s0=0; for p in "${PIDS[@]}"; do s0=$((s0 + $(ticks "$p"))); done
g0=$(ticks "$BENCH_PID"); i0=$(idle)
sleep "$WINDOW"
s1=0; for p in "${PIDS[@]}"; do s1=$((s1 + $(ticks "$p"))); done
g1=$(ticks "$BENCH_PID"); i1=$(idle)
wait "$BENCH_PID" || true
rate=$(grep -E "^\| $CLIENTS " "$LOG" | awk -F'|' -v s="$STORE" '{v = (s == "tribune") ? $3 : $6; gsub(/ /, "", v); print v}')
python3 - "$STORE" "$CLIENTS" "$WINDOW" "$((s1 - s0))" "$((g1 - g0))" "$((i1 - i0))" "$(getconf CLK_TCK)" "$(nproc)" "$rate" <<'PY'
import sys
store, clients, window, servers, gen, idle, hz, cores, rate = sys.argv[1:]
window, hz, cores = float(window), float(hz), int(cores)
servers, gen, idle = int(servers) / hz, int(gen) / hz, int(idle) / hz
rate = float(rate)
print(f"{store}, {clients} clients: {rate:,.0f} writes/s")
print(f"  servers        {servers / window * 100:5.0f} % of a core")
print(f"  load generator {gen / window * 100:5.0f} % of a core")
print(f"  machine busy   {100 - idle / (window * cores) * 100:5.0f} % of {cores} cores")
print(f"  server CPU per write {servers / (rate * window) * 1e6:.0f} µs, "
      f"load generator per write {gen / (rate * window) * 1e6:.0f} µs")
PY
