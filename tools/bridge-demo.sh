#!/usr/bin/env bash
# The segq-bridge demo page: installs what is missing, builds, starts a private redis-server
# (unless SEGQ_REDIS_URL is set), one worker (cellseg-unet and otsu) and segq-bridge --demo, and
# prints the page's address. Open it, choose images: each gets a progress bar and its polygons
# drawn over it, live over the bridge's WebSocket. Ctrl-C stops everything cleanly.
#   SEGQ_REDIS_URL=redis://host:port   use that Redis instead of starting one
#   SEGQ_BRIDGE_PORT=8700              the page's port;  SEGQ_BRIDGE_HOST=127.0.0.1
#   SEGQ_BRIDGE_DEMO_MODEL=cellseg-unet  the model uploads run (otsu is faster)
#   SEGQ_DEMO_BUILD=build  build folder;  SEGQ_DEMO_NO_BUILD=1  use what is in it
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build="${SEGQ_DEMO_BUILD:-build}"
worker_bin="$build/worker/segq-worker"
bridge_bin="$build/bridge/segq-bridge"
port="${SEGQ_BRIDGE_PORT:-8700}"
host="${SEGQ_BRIDGE_HOST:-127.0.0.1}"
tmp=""
pids=()

say() { printf '\n== %s\n' "$*"; }
die() { printf 'bridge-demo: %s\n' "$*" >&2; exit 1; }

# Stops the bridge, then the worker (SIGTERM: it drains), then Redis; removes the temp dir.
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p="${pids[$i]}"
    kill -0 "$p" 2>/dev/null || continue
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 400); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  [ -n "$tmp" ] && rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "bridge-demo: stopping" >&2; exit 0' INT TERM

if [ "${SEGQ_DEMO_NO_BUILD:-0}" != 1 ]; then
  say "bootstrap (installs missing Debian packages)"
  SEGQ_BOOTSTRAP_NO_NPM=1 tools/bootstrap.sh
  say "build ($build: segq-worker, segq-bridge)"
  cmake -S . -B "$build" >/dev/null
  cmake --build "$build" -j"${SEGQ_JOBS:-$(nproc)}" --target segq-worker segq-bridge
fi
[ -x "$worker_bin" ] || die "$worker_bin was not built"
[ -x "$bridge_bin" ] || die "$bridge_bin was not built"
tmp="$(mktemp -d /tmp/segq-bridge-demo.XXXXXX)"

if [ -z "${SEGQ_REDIS_URL:-}" ]; then
  rport="$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  say "redis-server on 127.0.0.1:$rport (private, in $tmp)"
  setsid redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" \
    --logfile "$tmp/redis.log" &
  pids+=($!)
  for _ in $(seq 1 100); do
    redis-cli -h 127.0.0.1 -p "$rport" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -h 127.0.0.1 -p "$rport" ping >/dev/null 2>&1 || die "redis-server did not answer on port $rport"
  export SEGQ_REDIS_URL="redis://127.0.0.1:$rport"
fi

say "worker (cellseg-unet, otsu; log: $tmp/worker.log)"
setsid "$worker_bin" --models cellseg-unet,otsu --model-dir models >"$tmp/worker.log" 2>&1 &
pids+=($!)

say "segq-bridge --demo on $host:$port (log: $tmp/bridge.log)"
SEGQ_BRIDGE_DEMO_MODEL="${SEGQ_BRIDGE_DEMO_MODEL:-cellseg-unet}" \
  setsid "$bridge_bin" --demo --host "$host" --port "$port" >"$tmp/bridge.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  kill -0 "${pids[-1]}" 2>/dev/null || { cat "$tmp/bridge.log" >&2; die "the bridge exited at start"; }
  /usr/bin/python3 -c "import urllib.request,sys; urllib.request.urlopen('http://$host:$port/healthz', timeout=1)" \
    >/dev/null 2>&1 && break
  sleep 0.1
done
echo
echo "bridge-demo: open http://$host:$port/ and choose images (samples/*.jpg work); Ctrl-C stops."
wait "${pids[-1]}"
