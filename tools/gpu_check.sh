#!/usr/bin/env bash
# gpu_check.sh: THE command a GPU session runs on the device machine (repository root there):
#   run(command="tools/gpu_check.sh [all|build|test|memcheck]", carry=[".debs", "build-gpu-prebuilt"])
# after tools/device_deps.sh ran here. One device command may last 10 minutes: "all" fits when
# the build is quick; otherwise run the phases as separate commands on the warm machine (build
# outputs and the conv algorithm cache in ~/.cache/segq stay there between calls). It unpacks .debs/ into a prefix, finds cuDNN/cuBLAS
# (CUDA toolkit, or PyTorch's pip wheels), builds with SEGQ_CUDA=ON when the device has nvcc
# (else uses the carried build-gpu-prebuilt/), runs the gpu tests (ctest -L gpu or the binaries)
# and compute-sanitizer memcheck on them, and writes every log to $OUT (or ./out/gpu).
# Exit status: 0 when every step that could run passed. SEGQ_GPU_CHECK_PREBUILT=1 skips the
# build and uses build-gpu-prebuilt/ even where nvcc exists.
set -uo pipefail
phase="${1:-all}"
case "$phase" in all | build | test | memcheck) ;; *) echo "usage: $0 [all|build|test|memcheck]" >&2; exit 2 ;; esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
OUT="${OUT:-$root/out/gpu}"
mkdir -p "$OUT"
status=0
log() { echo "gpu_check: $*" | tee -a "$OUT/summary.txt"; }
step() { # step NAME TIMEOUT CMD...: runs CMD with output in $OUT/NAME.log
  local name=$1 t=$2
  shift 2
  log "== $name: $*"
  timeout "$t" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  log "$name: rc=$rc"
  return $rc
}

# ---- 1. what machine is this ----
{
  date -u; uname -a; cat /etc/os-release 2>/dev/null | head -3; ldd --version 2>&1 | head -1
  nvidia-smi 2>&1 | head -20
  command -v nvcc && nvcc --version | tail -2
  /usr/bin/env python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())' 2>&1
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# ---- 2. libraries from .debs (hiredis, libuv, msgpack-c, turbojpeg, jansson, protobuf-c, openblas, redis, cmake) ----
prefix="$root/.device/prefix" # git-ignored
if [ -d .debs ] && ls .debs/*.deb >/dev/null 2>&1; then
  mkdir -p "$prefix"
  for d in .debs/*.deb; do dpkg -x "$d" "$prefix" || log "dpkg -x $d failed"; done
  multi="$prefix/usr/lib/x86_64-linux-gnu"
  # .pc files say prefix=/usr: point pkg-config at the unpacked tree
  for pc in "$multi"/pkgconfig/*.pc "$prefix"/usr/share/pkgconfig/*.pc; do
    [ -f "$pc" ] && sed -i "s|^prefix=/usr\$|prefix=$prefix/usr|" "$pc"
  done
  # Debian's openblas is an alternative: the real library sits in openblas-pthread/
  for so in "$multi"/openblas-pthread/lib*.so*; do
    [ -e "$so" ] && ln -sf "$so" "$multi/$(basename "$so")"
  done
  [ -e "$multi/openblas-pthread/openblas.pc" ] && ln -sf "$multi/openblas-pthread/openblas.pc" "$multi/pkgconfig/openblas.pc"
  export PATH="$prefix/usr/bin:$PATH"
  export PKG_CONFIG_PATH="$multi/pkgconfig:$prefix/usr/share/pkgconfig:${PKG_CONFIG_PATH:-}"
  export LD_LIBRARY_PATH="$multi:$multi/openblas-pthread:${LD_LIBRARY_PATH:-}"
  export CMAKE_PREFIX_PATH="$prefix/usr:${CMAKE_PREFIX_PATH:-}"
  export CPATH="$prefix/usr/include:$prefix/usr/include/x86_64-linux-gnu:${CPATH:-}"
  export LIBRARY_PATH="$multi:${LIBRARY_PATH:-}"
  [ -d "$prefix/usr/share/cmake-3.25" ] && export CMAKE_ROOT="$prefix/usr/share/cmake-3.25"
  log "unpacked $(ls .debs/*.deb | wc -l) .debs into $prefix"
else
  log "no .debs/ carried: relying on the machine's own libraries"
fi

# ---- 3. cuDNN and cuBLAS: the toolkit's, else PyTorch's pip wheels (nvidia-cudnn-cu13 ...) ----
py=$(command -v python3 || true)
site=""
[ -n "$py" ] && site=$("$py" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)
cudnn_lib="" cudnn_inc=""
for dir in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/lib/x86_64-linux-gnu $site; do
  [ -d "$dir" ] || continue
  f=$(find "$dir" -name 'libcudnn.so.9*' 2>/dev/null | head -1)
  if [ -n "$f" ]; then cudnn_lib=$(dirname "$f"); break; fi
done
for dir in /usr/local/cuda/include /usr/include $site; do
  [ -d "$dir" ] || continue
  f=$(find "$dir" -name cudnn.h 2>/dev/null | head -1)
  if [ -n "$f" ]; then cudnn_inc=$(dirname "$f"); break; fi
done
libdirs=""
for lib in 'libcudnn*.so.9*' 'libcublas.so.*' 'libcublasLt.so.*' 'libnvrtc*.so*'; do
  for dir in /usr/local/cuda/lib64 /usr/local/cuda/lib $site; do
    [ -d "$dir" ] || continue
    for f in $(find "$dir" -name "$lib" 2>/dev/null); do
      case ":$libdirs:" in *":$(dirname "$f"):"*) ;; *) libdirs="$libdirs:$(dirname "$f")" ;; esac
    done
  done
done
export LD_LIBRARY_PATH="${libdirs#:}:${LD_LIBRARY_PATH:-}"
log "cudnn lib: ${cudnn_lib:-none}; cudnn.h: ${cudnn_inc:-none}; CUDA lib dirs: ${libdirs#:}"

# ---- 4. build (nvcc here) or use the carried prebuilt tests ----
bindir=""
want() { [ "$phase" = all ] || [ "$phase" = "$1" ]; }
if [ -x build-gpu/tests/test_gpu_ops ] && ! want build; then
  bindir=build-gpu/tests
elif [ "${SEGQ_GPU_CHECK_PREBUILT:-0}" = 1 ]; then
  log "SEGQ_GPU_CHECK_PREBUILT=1: not building here"
elif command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  cuflags=()
  [ -n "$cudnn_inc" ] && cuflags+=(-DCUDNN_INCLUDE_DIR="$cudnn_inc")
  [ -n "$cudnn_lib" ] && cuflags+=(-DCUDNN_LIBRARY="$(ls "$cudnn_lib"/libcudnn.so* | head -1)")
  if step configure 120 cmake -S . -B build-gpu -DSEGQ_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo "${cuflags[@]}" &&
     step build 400 cmake --build build-gpu -j"$(nproc)" --target test_gpu_ops test_gpu_select onnx_run; then
    bindir=build-gpu/tests
  else
    status=1
  fi
fi
if [ -z "$bindir" ] && [ -x build-gpu-prebuilt/tests/test_gpu_ops ]; then
  log "using the carried build-gpu-prebuilt/ (built elsewhere)"
  bindir=build-gpu-prebuilt/tests
fi
[ -z "$bindir" ] && { log "no nvcc and no build-gpu-prebuilt/: nothing to run"; exit 1; }
ldd "$bindir/test_gpu_ops" >"$OUT/ldd.txt" 2>&1
grep "not found" "$OUT/ldd.txt" && log "missing shared libraries (see ldd.txt)"
export SEGQ_SOURCE_DIR="$root"
if want test && [ "$bindir" = build-gpu/tests ]; then
  step ctest 450 ctest --test-dir build-gpu -L gpu -V || status=1
  if grep -q "test_gpu_ops .*Skipped" "$OUT/ctest.log"; then
    log "test_gpu_ops SKIPPED (no usable device: see ctest.log)"
    status=1
  fi
elif want test; then
  step test_gpu_select 120 "$bindir/test_gpu_select" || status=1
  step test_gpu_ops 400 "$bindir/test_gpu_ops"
  rc=$?
  [ $rc -eq 77 ] && log "test_gpu_ops SKIPPED (no usable device: see test_gpu_ops.log)"
  [ $rc -ne 0 ] && status=1
fi

# ---- 5. compute-sanitizer memcheck on the GPU tests ----
san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null ||
      find $site -name compute-sanitizer -type f 2>/dev/null | head -1)
if ! want memcheck; then
  :
elif [ -n "$san" ]; then
  # op cases only: the models under memcheck would not fit one device command
  SEGQ_GPU_TEST_QUICK=1 step memcheck 500 "$san" --tool memcheck --leak-check full \
    --error-exitcode 9 "$bindir/test_gpu_ops" || status=1
else
  log "compute-sanitizer not found: memcheck not run"
fi

# ---- 6. CPU timing reference (test_gpu_ops.log has the GPU timings per model) ----
want test && [ -x "$bindir/onnx_run" ] && step onnx_run_cpu 60 "$bindir/onnx_run" models/cellseg-unet/model.onnx --batch 4
log "done: status=$status (logs in $OUT)"
exit $status
