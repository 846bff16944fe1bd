#!/usr/bin/env bash
# Installs what segq needs to build, test and run its demo on Debian 12, as root (or via sudo).
# Idempotent and quick when everything is present: it only calls apt-get for missing packages.
set -euo pipefail

PKGS=(build-essential cmake pkg-config git
      libhiredis-dev libuv1-dev libmsgpack-dev libturbojpeg0-dev libprotobuf-c-dev protobuf-c-compiler libopenblas-dev libjansson-dev
      redis-server
      python3 python3-redis python3-msgpack python3-numpy python3-pil)
# Optional groups, enabled by the caller: SEGQ_BOOTSTRAP_EXTRA="bench"
case " ${SEGQ_BOOTSTRAP_EXTRA:-} " in
  *" bench "*) PKGS+=(nodejs npm) ;;
esac

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "bootstrap: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system redis-server on install; segq's tests and demo run their own.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
$SUDO service redis-server stop >/dev/null 2>&1 || true
