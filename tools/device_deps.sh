#!/usr/bin/env bash
# device_deps.sh: run HERE (a Debian machine with apt) before a GPU session. Downloads the .debs
# of what the device machine lacks (hiredis, libuv, msgpack-c, turbojpeg, jansson, protobuf-c,
# OpenBLAS, oneDNN + libgomp (the cpu backend), redis, and cmake in case it has none) into .debs/ (git-ignored), and builds the GPU
# tests with SEGQ_CUDA=ON into build-gpu-prebuilt/ (used when the device has no nvcc). Then run,
# on the device:  run(command="tools/gpu_check.sh", carry=[".debs", "build-gpu-prebuilt"])
# Nothing is installed here; apt-get download needs no root.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p .debs
cd .debs
pkgs=(libhiredis-dev libhiredis0.14 libuv1-dev libuv1 libmsgpack-dev libmsgpackc2
      libturbojpeg0-dev libturbojpeg0 libjpeg62-turbo libjansson-dev libjansson4
      libprotobuf-c-dev libprotobuf-c1 protobuf-c-compiler libprotoc32 libprotobuf32
      libopenblas-dev libopenblas0 libopenblas0-pthread libopenblas-pthread-dev libgfortran5
      libdnnl-dev libdnnl2 libgomp1
      redis-server redis-tools liblzf1 libjemalloc2
      cmake cmake-data libjsoncpp25 librhash0 libarchive13 libcurl4 libnghttp2-14 librtmp1
      libssh2-1 libpsl5 libldap-2.5-0 libsasl2-2 libbrotli1 libxml2 libicu72 pkg-config pkgconf pkgconf-bin
      libpkgconf3)
ok=() missing=()
for p in "${pkgs[@]}"; do
  if ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p" >/dev/null 2>&1; then
    ok+=("$p")
  else
    missing+=("$p")
  fi
done
echo "device_deps: ${#ok[@]} packages in .debs/ ($(du -sh . | cut -f1))"
[ ${#missing[@]} -eq 0 ] || echo "device_deps: not downloadable here (skipped): ${missing[*]}" >&2

# Prebuilt GPU tests for a device without nvcc (CUDA 13 runtime linked statically; cuDNN and
# cuBLAS come from the device at run time).
cd "$root"
if [ "${SEGQ_SKIP_PREBUILT:-0}" != 1 ]; then
  # built in build-gpu-pack/, only the binaries go to build-gpu-prebuilt/ (carry limit 64 MiB)
  cmake -S . -B build-gpu-pack -DSEGQ_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-gpu-pack -j2 --target test_gpu_ops test_gpu_select onnx_run
  rm -rf build-gpu-prebuilt
  mkdir -p build-gpu-prebuilt/tests
  cp build-gpu-pack/tests/test_gpu_ops build-gpu-pack/tests/test_gpu_select \
    build-gpu-pack/tests/onnx_run build-gpu-prebuilt/tests/
  echo "device_deps: build-gpu-prebuilt/tests/ ready ($(du -sh build-gpu-prebuilt | cut -f1));" \
    "carry: .debs ($(du -sh .debs | cut -f1)) + build-gpu-prebuilt"
fi
