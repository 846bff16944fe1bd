#!/usr/bin/env bash
# The segq demo: installs what is missing, builds, starts a private redis-server (unless
# SEGQ_REDIS_URL is set) and one worker serving cellseg-unet (models/, the ONNX engine on the CPU)
# and otsu, submits samples/ to both with a live progress bar, writes JSON + overlay PNGs to
# out/demo/<model>/, prints both models' mean IoU against samples/truth/ (tools/score.py), and
# shuts everything down cleanly (also on Ctrl-C).
#   SEGQ_REDIS_URL=redis://host:port  use that Redis instead of starting one
#   SEGQ_PREFIX=segq                  key prefix
#   SEGQ_DEMO_BUILD=build             build folder;  SEGQ_DEMO_TIMEOUT=300  seconds to wait
#   SEGQ_DEMO_NO_BUILD=1              skip bootstrap and build (use what is in the build folder)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build="${SEGQ_DEMO_BUILD:-build}"
out=out/demo
timeout_s="${SEGQ_DEMO_TIMEOUT:-300}"
worker_bin="$build/worker/segq-worker"
tmp=""
redis_pid=""
worker_pid=""

say() { printf '\n== %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# Stops the worker first (SIGTERM: it drains, up to its --drain-timeout-s of 30 s, and unregisters), then Redis, then removes the temp dir.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
    echo "demo: stopping the worker (pid $worker_pid)"
    kill -TERM "$worker_pid" 2>/dev/null || true
    for _ in $(seq 1 400); do kill -0 "$worker_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$worker_pid" 2>/dev/null; then
      echo "demo: the worker did not stop within 40 s; killing it" >&2
      kill -KILL "$worker_pid" 2>/dev/null || true
    fi
    wait "$worker_pid" 2>/dev/null || true
  fi
  if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
    echo "demo: stopping redis-server (pid $redis_pid)"
    kill -TERM "$redis_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  [ -n "$tmp" ] && rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted" >&2; exit 130' INT TERM

if [ "${SEGQ_DEMO_NO_BUILD:-0}" != 1 ]; then
  say "bootstrap (installs missing Debian packages)"
  SEGQ_BOOTSTRAP_NO_NPM=1 tools/bootstrap.sh
  say "build ($build)"
  cmake -S . -B "$build" >/dev/null
  if ! cmake --build "$build" -j"${SEGQ_JOBS:-$(nproc)}"; then
    # The demo needs only the worker; a broken test or tool target should not stop it.
    echo "demo: the full build failed; building just the worker" >&2
    cmake --build "$build" -j"${SEGQ_JOBS:-$(nproc)}" --target segq-worker
  fi
fi
[ -x "$worker_bin" ] || die "$worker_bin was not built"

models=(cellseg-unet otsu)
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.png
for m in "${models[@]}"; do mkdir -p "$out/$m"; rm -f "$out/$m"/*.json "$out/$m"/*.png; done
tmp="$(mktemp -d /tmp/segq-demo.XXXXXX)"

if [ -z "${SEGQ_REDIS_URL:-}" ]; then
  port="$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  say "redis-server on 127.0.0.1:$port (private, in $tmp)"
  # setsid: Ctrl-C reaches only the foreground command; cleanup stops Redis after the worker.
  setsid redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" \
    --logfile "$tmp/redis.log" &
  redis_pid=$!
  for _ in $(seq 1 100); do
    redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
    kill -0 "$redis_pid" 2>/dev/null || die "redis-server exited; see its log: $(tail -5 "$tmp/redis.log")"
    sleep 0.1
  done
  redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 || die "redis-server did not answer on port $port"
  export SEGQ_REDIS_URL="redis://127.0.0.1:$port"
else
  say "using Redis at $SEGQ_REDIS_URL"
fi
export SEGQ_PREFIX="${SEGQ_PREFIX:-segq}"

say "worker: $worker_bin --models cellseg-unet,otsu --model-dir models (log: $out/worker.log)"
setsid "$worker_bin" --models cellseg-unet,otsu --model-dir models >"$out/worker.log" 2>&1 &
worker_pid=$!
# Ready when its lease shows up in the stats; give up early if it exits.
ready=0
for _ in $(seq 1 100); do
  kill -0 "$worker_pid" 2>/dev/null || { tail -20 "$out/worker.log" >&2; worker_pid=""; die "the worker exited at start (log above)"; }
  if tools/segq stats --json 2>/dev/null | /usr/bin/python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["live_workers"] > 0 else 1)'; then
    ready=1
    break
  fi
  sleep 0.1
done
[ "$ready" = 1 ] || echo "demo: the worker has not registered after 10 s; submitting anyway" >&2

stamp="$(date +%Y%m%d-%H%M%S)"
rc=0
for m in "${models[@]}"; do
  say "tools/segq submit samples/ --model $m --group demo-$m-$stamp --wait --out $out/$m"
  mrc=0
  tools/segq submit samples/ --model "$m" --group "demo-$m-$stamp" --wait --timeout "$timeout_s" \
    --out "$out/$m" || mrc=$?
  if [ "$mrc" = 130 ]; then echo "demo: interrupted" >&2; exit 130; fi
  [ "$mrc" = 0 ] || rc=$mrc
done

say "foreground IoU against samples/truth/ (tools/score.py)"
for m in "${models[@]}"; do
  /usr/bin/python3 tools/score.py "$out/$m" samples/truth --label "$m" || rc=1
done

say "queue statistics"
tools/segq stats || true

echo
if [ "$rc" = 0 ]; then
  echo "demo: results in $PWD/$out/<model>/ (cellseg-unet, otsu):"
  echo "  <image>.json         polygons, timings, worker (one per image); summary.json for the group"
  echo "  <image>.overlay.png  the image with the detected outlines drawn in green"
  echo "  $out/worker.log  the worker's log"
else
  echo "demo: submit failed (exit $rc); worker log: $out/worker.log" >&2
fi
exit "$rc"
