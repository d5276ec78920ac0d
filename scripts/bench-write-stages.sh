#!/usr/bin/env bash
# Where a durable write's time goes on 3 servers: starts three release
# servers on loopback, sends N sequential registrations to the leader, and
# prints each server's per-stage histograms (means) from /metrics. With
# --strace, also times the leader's fdatasync calls and counts its pwrite64s.
#
#   cargo build --release -p tribune-server
#   bash scripts/bench-write-stages.sh [--writes 300] [--strace]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TRIBUNE_BIN:-target/release/tribune}
WRITES=300
STRACE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --writes) WRITES=$2; shift 2 ;;
    --strace) STRACE=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release -p tribune-server" >&2; exit 1; }
DIR=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$DIR"' EXIT
for i in 1 2 3; do
  "$BIN" agent --server --node s$i --data-dir "$DIR/s$i" --bootstrap-expect 3 \
    --retry-join 127.0.0.1:28301 --serf-lan-addr 127.0.0.1:2830$i \
    --server-addr 127.0.0.1:2840$i --grpc-addr 127.0.0.1:2850$i --http-addr 127.0.0.1:2860$i \
    > "$DIR/s$i.log" 2>&1 &
done
for _ in $(seq 1 100); do
  leader=$(curl -s 127.0.0.1:28601/v1/status/leader | tr -d '"') || true
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || { echo "no leader elected" >&2; exit 1; }
n=${leader: -1}
echo "leader: s$n"
if [ "$STRACE" = 1 ]; then
  pid=$(pgrep -f -- "--node s$n --data-dir $DIR/s$n")
  strace -f -T -e trace=fdatasync,pwrite64 -p "$pid" -o "$DIR/strace.txt" &
  sleep 1
fi
start=$(date +%s.%N)
for i in $(seq 1 "$WRITES"); do
  "$BIN" services register --name s --id "s-$i" --port 1 --grpc-addr "127.0.0.1:2850$n" > /dev/null
done
echo "$WRITES sequential writes in $(python3 -c "print(round($(date +%s.%N) - $start, 2))") s (CLI start-up included)"
if [ "$STRACE" = 1 ]; then
  sleep 1; pkill -f "strace -f -T -e trace=fdatasync" || true; sleep 1
  python3 - "$DIR/strace.txt" "$WRITES" <<'PY'
import re, sys
d = [float(m.group(1)) for l in open(sys.argv[1]) if (m := re.search(r"fdatasync\(.*<([\d.]+)>", l))]
pw = sum(1 for l in open(sys.argv[1]) if "pwrite64(" in l)
if d:
    print(f"leader fdatasync: {len(d)} calls, mean {sum(d) / len(d) * 1e3:.3f} ms; "
          f"pwrite64 per write {pw / int(sys.argv[2]):.1f}")
PY
fi
python3 - <<'PY'
import urllib.request
stages = ["commit", "log_append", "append_entries_rpc", "apply"]
for i in (1, 2, 3):
    text = urllib.request.urlopen(f"http://127.0.0.1:2860{i}/metrics").read().decode()
    sums, counts = {}, {}
    for line in text.splitlines():
        for s in stages:
            name = f"tribune_raft_{s}_seconds"
            if line.startswith(name + "_sum "):
                sums[s] = float(line.split()[1])
            if line.startswith(name + "_count "):
                counts[s] = float(line.split()[1])
    row = ", ".join(
        f"{s} {sums[s] / counts[s] * 1e3:.2f} ms (n={int(counts[s])})"
        for s in stages if counts.get(s)
    )
    print(f"s{i}: {row}")
PY
