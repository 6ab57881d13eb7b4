#!/usr/bin/env bash
# Load test: the static floor (examples/floor.rs, same TLS/HTTP stack, precomputed answer) and then the
# real webhook, each pinned to core 0 with `taskset`, wrk pinned to core 1, posting the captured 4 KB
# Deployment-pod AdmissionReview (rewritten by a mig rule) at 1, 16, 64 and 256 keep-alive connections
# and once with a new TLS connection per request. Reads server CPU from /proc/PID/stat and peak RSS
# from VmHWM, then a soak of at least 1 million requests for RSS growth. Prints one table and writes
# bench/results.json and bench/chart.svg.
#
#   bench/run.sh [SECONDS_PER_RUN]      (default 10; needs 2 cores, root for apt-get if wrk is missing)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
review=tests/data/reviews/ml-inference-llm-server-84f7f4dd45-create.json

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
command -v taskset >/dev/null || { echo "taskset (util-linux) is required"; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores: server on core 0, wrk on core 1"; exit 1; }

cargo build --release --quiet --bin gpu-slicer --example floor
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
results=bench/results.json
: > "$results"
tck=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
vm() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

wait_up() {
  for _ in $(seq 1 100); do
    curl -sk -o /dev/null "https://127.0.0.1:$1/healthz" && return 0
    sleep 0.1
  done
  echo "server on port $1 did not come up"; exit 1
}

# run NAME PID PORT CONNECTIONS CLOSE
run() {
  local name=$1 pid=$2 port=$3 conns=$4 close=$5 out before after
  BENCH_REVIEW=$review BENCH_CLOSE=$close taskset -c 1 wrk -t1 -c"$conns" -d2s -s bench/post.lua \
    "https://127.0.0.1:$port/mutate?timeout=10s" >/dev/null 2>&1 || true   # warm-up
  before=$(cpu_ticks "$pid")
  out=$(BENCH_REVIEW=$review BENCH_CLOSE=$close taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s bench/post.lua \
    "https://127.0.0.1:$port/mutate?timeout=10s" | tail -1)
  after=$(cpu_ticks "$pid")
  python3 - "$name" "$conns" "$close" "$out" "$before" "$after" "$tck" "$(vm "$pid" VmHWM)" >> "$results" <<'PY'
import json, sys
name, conns, close, out, before, after, tck, hwm = sys.argv[1:]
r = json.loads(out)
secs = r["duration_us"] / 1e6
r.update(server=name, connections=int(conns), keepalive=close != "1", rps=r["requests"] / secs,
         cpu_us_per_req=(int(after) - int(before)) / int(tck) * 1e6 / max(r["requests"], 1),
         rss_kib=int(hwm))
print(json.dumps(r))
PY
  tail -1 "$results"
}

start_floor() {
  taskset -c 0 target/release/examples/floor 127.0.0.1:18601 "$work/certs" "$review" 2>"$work/floor.log" &
  echo $! > "$work/pid"; wait_up 18601
}
start_webhook() {
  # The production log level: one JSON audit line per admission, formatted and written. Written to
  # /dev/null, as a container's stderr goes to a pipe: with a file on this disk (hundreds of MB of
  # audit lines per run) p99.9 rose from ~3 ms to ~15 ms (BENCHMARKS.md).
  RUST_LOG=info taskset -c 0 target/release/gpu-slicer serve --offline --listen 127.0.0.1:18602 \
    --certs-dir "$work/certs" 2>/dev/null &
  echo $! > "$work/pid"; wait_up 18602
}

for server in floor webhook; do
  if [ $server = floor ]; then start_floor; port=18601; else start_webhook; port=18602; fi
  pid=$(cat "$work/pid")
  for c in 1 16 64 256; do run $server "$pid" $port $c 0; done
  run $server "$pid" $port 16 1
  if [ $server = webhook ]; then
    # Soak: RSS after a first run, then after >= 1 million more requests.
    rss0=$(vm "$pid" VmRSS)
    total=0
    while [ $total -lt 1000000 ]; do
      n=$(BENCH_REVIEW=$review taskset -c 1 wrk -t1 -c16 -d20s -s bench/post.lua \
          "https://127.0.0.1:$port/mutate?timeout=10s" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
      total=$((total + n))
    done
    rss1=$(vm "$pid" VmRSS)
    echo "{\"soak\": true, \"requests\": $total, \"rss_before_kib\": $rss0, \"rss_after_kib\": $rss1}" | tee -a "$results"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

python3 bench/report.py "$results" bench/chart.svg
