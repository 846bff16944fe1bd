#!/usr/bin/env bash
# Installs what segq needs to build, test and run its demo on Debian 12, as root (or via sudo).
# Idempotent and quick when everything is present: it only calls apt-get for missing packages.
set -euo pipefail

PKGS=(build-essential cmake pkg-config git
      libhiredis-dev libuv1-dev libmsgpack-dev libturbojpeg0-dev libprotobuf-c-dev protobuf-c-compiler libdnnl-dev libjansson-dev
      libmicrohttpd-dev
      libwebsockets-dev libwebsockets-evlib-uv libssl-dev
      redis-server redis-sentinel stunnel4 openssl
      python3 python3-redis python3-msgpack python3-numpy python3-pil python3-tifffile)
# Deployment checks (tests/deploy/, tests/integration/test_metrics.py): compose/Kubernetes/alert
# YAML, Prometheus's text parser, objdump for the image's library check, and Prometheus itself
# (promtool for the alert rules' unit tests; the server evaluates the dashboard's queries).
# SEGQ_BOOTSTRAP_BUILD_ONLY=1 (the images' build stages) leaves these out.
[ -n "${SEGQ_BOOTSTRAP_BUILD_ONLY:-}" ] || PKGS+=(python3-yaml python3-prometheus-client binutils prometheus)
# The bridge's tests: WebSocket clients (python3-websockets), and for tests/browser Debian's
# chromium (driven by playwright-core, no browser download) with a font, and Node (the machine's
# own Node/npm is used when present: Debian's npm conflicts with a newer one).
# SEGQ_BOOTSTRAP_BUILD_ONLY=1 (the images' build stages) leaves these out.
# The Python client as a package (tests/integration/test_client_package.py: a venv with
# Debian's site packages, pip install --no-deps --no-build-isolation, which needs setuptools and
# wheel from Debian) and its FastAPI example (docs/clients.md, tested with httpx's ASGI client).
if [ -z "${SEGQ_BOOTSTRAP_BUILD_ONLY:-}" ]; then
  PKGS+=(python3-venv python3-setuptools python3-wheel python3-fastapi python3-httpx)
  PKGS+=(python3-websockets chromium fonts-dejavu-core)
  command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
fi
# Optional groups, enabled by the caller: SEGQ_BOOTSTRAP_EXTRA="bench export"
case " ${SEGQ_BOOTSTRAP_EXTRA:-} " in
  # The machine's own Node/npm is used when present (Debian's npm conflicts with a newer one).
  *" bench "*) command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
               PKGS+=(valgrind) ;;  # bench/profile_instructions.py
esac
# "export": torch/torchvision/onnx for regenerating test and benchmark models
# (tools/export_test_models.py, tools/make_fp16_models.py); no test needs them (the files
# are committed).
case " ${SEGQ_BOOTSTRAP_EXTRA:-} " in
  *" export "*) PKGS+=(python3-torch python3-torchvision python3-onnx) ;;
esac

# npm packages of the tests, each from its package-lock.json: ONNX Runtime for
# tests/integration/test_engine_ort.py (onnxruntime-node ships its CPU library in the npm
# package) and playwright-core + ws for tests/browser (no browser download: Debian's chromium).
# Installed when node_modules is missing and npm is present; quiet, and never fails the
# bootstrap (offline, no npm: those tests skip and say why). SEGQ_BOOTSTRAP_NO_NPM=1 skips it
# (the demo does not need it).
npm_install() {
  local dir
  [ -z "${SEGQ_BOOTSTRAP_NO_NPM:-}" ] || return 0
  command -v npm >/dev/null 2>&1 || return 0
  for dir in tests/ort tests/browser; do
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/$dir"
    [ -d "$dir/node_modules" ] && continue
    timeout 300 npm ci --ignore-scripts --prefix "$dir" --no-audit --no-fund --loglevel=error \
      >/dev/null 2>&1 || echo "bootstrap: npm ci in $dir failed (no registry?); its tests will skip" >&2
  done
  return 0
}

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  npm_install
  exit 0
fi
echo "bootstrap: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system redis-server (and redis-sentinel, and prometheus) on install; segq's
# tests and demo run their own, on free ports.
for svc in redis-server redis-sentinel prometheus; do
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
npm_install
