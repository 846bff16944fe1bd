#!/usr/bin/env bash
# device_deps.sh: run HERE (a Debian machine with apt) before a GPU session; then, on the device:
#   run(command="tools/gpu_check.sh", carry=[".debs", ".gpu-carry"], timeout_s=600)
# Nothing is installed here (apt-get download needs no root). It fills two git-ignored folders:
#   .debs/       the .debs of what the device image lacks: the -dev packages of tools/bootstrap.sh's
#                PKGS (and any a branch adds there: libdnnl-dev, libmicrohttpd-dev, ...) with their
#                library dependencies, redis-server, and pkg-config. Not cmake (the image has it),
#                not the toolchain or Python (the image has those), not libc & co.
#   .gpu-carry/  pylib/: Debian's pure-Python redis-py (+ async_timeout, deprecated) for the
#                integration harness (the device's python3 has no redis module); onnx-tests/: the
#                ONNX conformance cases (../shared does not travel to the device).
# The carry limit is 64 MiB for the whole working tree; this prints what it adds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# ---- the package list, derived from bootstrap.sh ----
eval "$(sed -n '/^PKGS=(/,/)/p' tools/bootstrap.sh)"
base=" libc6 libgcc-s1 libstdc++6 zlib1g libssl3 libsystemd0 lsb-base init-system-helpers adduser
       debconf perl python3 libpython3-stdlib dpkg libcrypt1 libzstd1 liblzma5 libbz2-1.0 "
top=()
for p in "${PKGS[@]}"; do
  case "$p" in *-dev | redis-server | protobuf-c-compiler) top+=("$p") ;; esac
done
top+=(redis-tools pkg-config pkgconf pkgconf-bin libpkgconf3)
# Direct dependencies, first alternative of each "|Depends:" group, recursively, minus base.
deps_of() {
  apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances --no-pre-depends "$1" 2>/dev/null |
    awk 'BEGIN{alt=0} /Depends:/{ if (!alt) print $2; alt = ($1 ~ /^\|/) }' | grep -v '^<'
}
declare -A seen=()
queue=("${top[@]}")
pkgs=()
while [ ${#queue[@]} -gt 0 ]; do
  p=${queue[0]}
  queue=("${queue[@]:1}")
  [ -n "${seen[$p]:-}" ] && continue
  seen[$p]=1
  case "$base" in *" $p "*) continue ;; esac
  # the toolchain, PAM/Kerberos/SELinux and C++-only headers: the image has them or we need none
  # (libgomp1 stays: oneDNN, the cpu backend on main, needs it)
  case "$p" in
    libgcc* | libstdc++* | libc6* | libc-dev* | gcc-* | linux-libc-dev | libboost* | libmsgpack-cxx-dev | \
      passwd | libpam* | libaudit* | libselinux* | libsemanage* | libsepol* | libpcre* | libcap* | \
      libkrb* | libgssapi* | libk5crypto* | libcom-err* | libkeyutils* | libtirpc* | libnsl* | \
      rpcsvc-proto | libcrypt* | libatomic* | libitm* | lib*san* | libubsan*) continue ;;
  esac
  pkgs+=("$p")
  for d in $(deps_of "$p"); do
    [ -n "${seen[$d]:-}" ] || queue+=("$d")
  done
done

mkdir -p .debs .gpu-carry/pylib
# drop .debs an earlier list wanted and this one does not
for f in .debs/*.deb; do
  [ -e "$f" ] || continue
  n=$(basename "$f")
  [ -n "${seen[${n%%_*}]:-}" ] && printf ' %s ' "${pkgs[@]}" | grep -q " ${n%%_*} " || rm -f "$f"
done
ok=() missing=()
for p in "${pkgs[@]}"; do
  if (cd .debs && { ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p" >/dev/null 2>&1; }); then
    ok+=("$p")
  else
    missing+=("$p")
  fi
done
echo "device_deps: ${#ok[@]} packages in .debs/ ($(du -sh .debs | cut -f1)): ${ok[*]}"
[ ${#missing[@]} -eq 0 ] || echo "device_deps: not downloadable here (skipped): ${missing[*]}" >&2

# ---- pure-Python redis client and the conformance cases ----
dist=/usr/lib/python3/dist-packages
for m in redis async_timeout deprecated; do
  if [ -d "$dist/$m" ]; then
    rm -rf ".gpu-carry/pylib/$m"
    cp -r "$dist/$m" .gpu-carry/pylib/
  else
    echo "device_deps: $dist/$m missing (apt-get install python3-redis here)" >&2
  fi
done
find .gpu-carry/pylib -name __pycache__ -type d -prune -exec rm -rf {} +
src="${SEGQ_ONNX_TESTS:-$root/../shared/onnx-tests}"
if [ -d "$src/node" ]; then
  rm -rf .gpu-carry/onnx-tests
  cp -r "$src" .gpu-carry/onnx-tests
else
  echo "device_deps: no ONNX conformance cases at $src: gpu.conformance_cuda will skip there" >&2
fi
tree=$(git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carry=$(du -sb .debs .gpu-carry | awk '{s += $1} END {print s}')
echo "device_deps: .gpu-carry/ $(du -sh .gpu-carry | cut -f1); tree + carry =" \
  "$(((tree + carry) / 1048576)) MiB of the 64 MiB a device call takes"
[ $((tree + carry)) -lt $((60 * 1048576)) ] || { echo "device_deps: too large to carry" >&2; exit 1; }
