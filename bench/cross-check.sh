#!/usr/bin/env bash
# Cross-check of the floor, and A/B rounds: alternates the throwaway floor (examples/throwaway_floor.rs,
# RSA-2048 when openssl is installed, else the dev ECDSA certificate), our floor (examples/floor.rs) and
# the webhook (RUST_LOG=info, stderr to /dev/null, as in bench/run.sh), each pinned to core 0 with wrk
# on core 1, at CONNS keep-alive connections. Alternating rounds keep drift on a shared VM out of the
# comparison. Extra webhook binaries (e.g. a build of another commit) can be named after the options.
#
#   bench/cross-check.sh [SECONDS_PER_RUN] [ROUNDS] [WEBHOOK_BINARY...]   (default 5 3; CONNS=16)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
shift $(( $# < 2 ? $# : 2 ))
conns=${CONNS:-16}
review=tests/data/reviews/ml-inference-llm-server-84f7f4dd45-create.json
command -v wrk >/dev/null || { echo "wrk is required (bench/run.sh installs it)"; exit 1; }

cargo build --release --quiet --bin gpu-slicer --example floor --example throwaway_floor
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
tck=$(getconf CLK_TCK)
port=18611

wait_up() {
  for _ in $(seq 1 100); do
    curl -sk -o /dev/null "https://127.0.0.1:$port/healthz" && return 0
    curl -sk -o /dev/null -X POST --data-binary @"$review" "https://127.0.0.1:$port/mutate" && return 0
    sleep 0.1
  done
  echo "server did not come up"; exit 1
}

start() {
  case $1 in
    throwaway)
      taskset -c 0 target/release/examples/throwaway_floor 127.0.0.1:$port \
        "$work/floor-cert.pem" "$work/floor-key.pem" "$work/answer.json" 2>/dev/null & ;;
    floor)
      taskset -c 0 target/release/examples/floor 127.0.0.1:$port "$work/certs" "$review" 2>/dev/null & ;;
    *)
      RUST_LOG=info taskset -c 0 "$1" serve --offline --listen 127.0.0.1:$port \
        --certs-dir "$work/certs" 2>/dev/null & ;;
  esac
  echo $! > "$work/pid"
  wait_up
}

# The precomputed answer is the webhook's own answer to the review; the certificate, RSA-2048 as the
# issue's floor had where openssl can make one.
start target/release/gpu-slicer
curl -sk -X POST -H 'content-type: application/json' --data-binary @"$review" \
  "https://127.0.0.1:$port/mutate" > "$work/answer.json"
kill "$(cat "$work/pid")"; wait "$(cat "$work/pid")" 2>/dev/null || true
if command -v openssl >/dev/null; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$work/floor-key.pem" -out "$work/floor-cert.pem" 2>/dev/null
else
  cp "$work/certs/tls.crt" "$work/floor-cert.pem"; cp "$work/certs/tls.key" "$work/floor-key.pem"
fi

printf '%-5s %-34s %9s %6s %6s %7s %6s %6s\n' round server req/s p50us p99us cpu_us user sys
for r in $(seq 1 "$rounds"); do
  for server in throwaway floor target/release/gpu-slicer "$@"; do
    start "$server"
    pid=$(cat "$work/pid")
    BENCH_REVIEW=$review taskset -c 1 wrk -t1 -c"$conns" -d1s -s bench/post.lua \
      "https://127.0.0.1:$port/mutate?timeout=10s" >/dev/null 2>&1 || true   # warm-up
    before=$(awk '{print $14, $15}' "/proc/$pid/stat")
    out=$(BENCH_REVIEW=$review taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s bench/post.lua \
      "https://127.0.0.1:$port/mutate?timeout=10s" | tail -1)
    after=$(awk '{print $14, $15}' "/proc/$pid/stat")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$r" "$server" "$out" "$before" "$after" "$tck" <<'PY'
import json, sys
r, server, out, before, after, tck = sys.argv[1:]
w = json.loads(out)
n = max(w["requests"], 1)
(u0, s0), (u1, s1) = (map(int, before.split()), map(int, after.split()))
user, sys_ = ((u1 - u0) / int(tck) * 1e6 / n, (s1 - s0) / int(tck) * 1e6 / n)
bad = w["errors"] + w["non2xx"]
print(f"{r:<5} {server[-34:]:<34} {w['requests'] / (w['duration_us'] / 1e6):9.0f} {w['p50_us']:6d} "
      f"{w['p99_us']:6d} {user + sys_:7.1f} {user:6.1f} {sys_:6.1f}" + (f"  ERRORS {bad}" if bad else ""))
PY
  done
done
