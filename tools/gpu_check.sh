#!/usr/bin/env bash
# gpu_check.sh: THE command a GPU session runs on the device machine, unattended:
#   here first:  tools/device_deps.sh            (fills .debs/ and .gpu-carry/, git-ignored)
#   device:      run(command="tools/gpu_check.sh", carry=[".debs", ".gpu-carry"], timeout_s=600)
# Phases: all (default) | build | test | e2e | bench | memcheck; "all" runs them in that order
# inside one global budget (SEGQ_GPU_CHECK_BUDGET_S, default 540 s: a device command may last
# 600) and records every phase it had no time left for as "not run: budget"; a later call on the
# still-warm machine runs the rest by name (build-gpu/ stays there between calls).
#   build     cmake -DSEGQ_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90, the GPU tests, worker, tune, bench
#   test      ctest -L gpu: every op GPU vs CPU (fp32 and fp16), conformance on the GPU, the
#             models GPU vs CPU (fp32 max abs diff <= 1e-3), fp16 mask IoU >= 0.99 vs fp32 on
#             the cellseg eval set, multi-device/streams/memory policy units
#   e2e       tests/gpu/test_gpu_e2e.py: the worker on the GPU through a real redis-server
#             (from .debs): masks vs a CPU worker, a saturated run (images/s, GPU utilization),
#             time from start to ready
#   bench     bench/gpu_vs_torch.py: the engine vs PyTorch eager (channels_last +
#             inference_mode, torch.compile where it works): cellseg-unet, unet512, hrnet_w18
#             (exported there with timm), batch 1/8/16/32, fp32/fp16
#   memcheck  compute-sanitizer memcheck of the op cases (SEGQ_GPU_TEST_QUICK=1)
# What comes back ($OUT, at most 8 files): summary.txt (one line per step), env.txt,
# results.json + results.md (every figure: e2e, bench, test verdicts), logs.tar.gz (every log).
# Exit status: 0 when every step that ran passed.
set -uo pipefail
phase="${1:-all}"
case "$phase" in all | build | test | e2e | bench | memcheck) ;;
  *) echo "usage: $0 [all|build|test|e2e|bench|memcheck]" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
OUT="${OUT:-$root/out/gpu}"
mkdir -p "$OUT"
LOGS="$(mktemp -d /tmp/segq-gpu-check.XXXXXX)" # tarred into $OUT/logs.tar.gz at exit
budget_s="${SEGQ_GPU_CHECK_BUDGET_S:-540}"
t_start=$(date +%s)
status=0
log() { echo "gpu_check: $*" | tee -a "$OUT/summary.txt"; }
left() { echo $((budget_s - ($(date +%s) - t_start))); }
finish() {
  local rc=$?
  [ -f "$OUT/results.json" ] || echo '{}' >"$OUT/results.json"
  tar -C "$LOGS" -czf "$OUT/logs.tar.gz" . 2>/dev/null
  rm -rf "$LOGS"
  log "done: phase=$phase status=$status elapsed_s=$(($(date +%s) - t_start)) (logs.tar.gz)"
  exit $((status ? status : rc))
}
trap finish EXIT
step() { # step NAME TIMEOUT CMD...: CMD with its output in $LOGS/NAME.log, capped by the budget
  local name=$1 t=$2
  shift 2
  local l
  l=$(left)
  if [ "$l" -lt 20 ]; then
    log "$name: not run: budget ($budget_s s) spent"
    return 124
  fi
  [ "$t" -gt $((l - 10)) ] && t=$((l - 10))
  log "== $name (<= ${t}s): $*"
  timeout -k 5 "$t" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  tail -n 15 "$LOGS/$name.log"
  log "$name: rc=$rc ($([ $rc -eq 124 ] && echo "timed out" || echo "finished"))"
  return $rc
}
want() { [ "$phase" = all ] || [ "$phase" = "$1" ]; }

# ---- 1. what machine is this ----
{
  date -u; uname -a; cat /etc/os-release 2>/dev/null | head -3; ldd --version 2>&1 | head -1
  nvidia-smi 2>&1 | head -20
  command -v nvcc && nvcc --version | tail -2
  /usr/bin/env python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())' 2>&1
  /usr/bin/env python3 -c 'import timm; print("timm", timm.__version__)' 2>&1
  command -v compute-sanitizer cmake redis-server; nproc; free -g | head -2
} >"$OUT/env.txt" 2>&1
head -n 30 "$OUT/env.txt"

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


# ---- 4. pure-Python redis client and the conformance cases (tools/device_deps.sh) ----
export PYTHONPATH="$root/clients/python:$root/tests/support:$root/.gpu-carry/pylib:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
[ -d .gpu-carry/onnx-tests/node ] && export SEGQ_ONNX_TESTS="$root/.gpu-carry/onnx-tests"
python3 -c 'import redis' 2>/dev/null || log "no redis-py (carry .gpu-carry): e2e will fail"
export SEGQ_SOURCE_DIR="$root" SEGQ_BUILD_DIR="$root/build-gpu"

# ---- 5. build ----
targets=(test_gpu_ops test_gpu_select test_gpu_models test_gpu_devices onnx_conformance onnx_run
         segq-worker segq-tune engine_bench)
if want build || [ ! -x build-gpu/tests/test_gpu_ops ]; then
  if [ "$phase" = all ] || [ "$phase" = build ] || [ ! -x build-gpu/tests/test_gpu_ops ]; then
    cuflags=()
    [ -n "$cudnn_inc" ] && cuflags+=(-DCUDNN_INCLUDE_DIR="$cudnn_inc")
    [ -n "$cudnn_lib" ] && cuflags+=(-DCUDNN_LIBRARY="$(ls "$cudnn_lib"/libcudnn.so* | head -1)")
    if step configure 120 cmake -S . -B build-gpu -DSEGQ_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
         -DCMAKE_CUDA_ARCHITECTURES=90 -DSEGQ_PYTHON="$(command -v python3)" "${cuflags[@]}" &&
       step build 360 cmake --build build-gpu -j"$(nproc)" --target "${targets[@]}"; then
      :
    else
      status=1
      log "build failed: nothing else can run"
      exit 1
    fi
  fi
fi
ldd build-gpu/tests/test_gpu_ops >"$LOGS/ldd.txt" 2>&1
grep -q "not found" "$LOGS/ldd.txt" && log "missing shared libraries (ldd.txt in logs.tar.gz)"

# ---- 6. ctest -L gpu (the e2e test runs in its own phase) ----
if want test; then
  step ctest 300 ctest --test-dir build-gpu -L gpu -E test_gpu_e2e --output-on-failure -V || status=1
  grep -E "Test +#[0-9]+:" "$LOGS/ctest.log" | tee -a "$OUT/summary.txt"
  if grep -q "test_gpu_ops .*Skipped" "$LOGS/ctest.log"; then
    log "test_gpu_ops SKIPPED (no usable device: see ctest.log)"
    status=1
  fi
fi

# ---- 7. end to end on the GPU ----
if want e2e; then
  SEGQ_GPU_RESULTS="$LOGS/e2e.json" SEGQ_E2E_JOBS="${SEGQ_E2E_JOBS:-3000}" \
    step e2e 240 python3 tests/gpu/test_gpu_e2e.py || status=1
fi

# ---- 8. the engine vs PyTorch ----
if want bench; then
  step bench 240 python3 bench/gpu_vs_torch.py --device cuda --engine-bench build-gpu/bench/engine_bench \
    --json "$LOGS/bench.json" --md "$LOGS/bench.md" || status=1
fi

# ---- 9. compute-sanitizer memcheck of the op cases (last: slow) ----
san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null ||
      find $site -name compute-sanitizer -type f 2>/dev/null | head -1)
if ! want memcheck; then
  :
elif [ -n "$san" ]; then
  SEGQ_GPU_TEST_QUICK=1 step memcheck 240 "$san" --tool memcheck --leak-check full \
    --error-exitcode 9 build-gpu/tests/test_gpu_ops || status=1
else
  log "compute-sanitizer not found: memcheck not run"
fi

# ---- 10. results.json / results.md ----
python3 - "$LOGS" "$OUT" "$phase" <<'PY' || log "results: could not be written"
import json, os, re, sys
logs, out, phase = sys.argv[1:4]
res = {"phase": phase, "steps": {}}
summ = open(os.path.join(out, "summary.txt")).read()
for m in re.finditer(r"gpu_check: (\w+): (rc=\d+|not run: budget)", summ):
    res["steps"][m.group(1)] = m.group(2)
for name in ("e2e", "bench"):
    p = os.path.join(logs, name + ".json")
    if os.path.exists(p):
        try:
            res[name] = json.load(open(p))
        except ValueError as e:
            res[name] = {"error": str(e)}
ct = os.path.join(logs, "ctest.log")
if os.path.exists(ct):
    res["ctest"] = re.findall(r"Test +#\d+: (\S+) \.+\** *(\w+(?: \w+)*?) +[\d.]+ sec", open(ct).read())
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1)
md = ["# gpu_check results (%s)" % phase, "", "| step | outcome |", "| --- | --- |"]
md += ["| %s | %s |" % kv for kv in res["steps"].items()]
if "ctest" in res:
    md += ["", "| test | result |", "| --- | --- |"] + ["| %s | %s |" % t for t in res["ctest"]]
if "e2e" in res:
    md += ["", "## end to end", "", "```", json.dumps(res["e2e"], indent=1), "```"]
bm = os.path.join(logs, "bench.md")
if os.path.exists(bm):
    md += ["", open(bm).read()]
open(os.path.join(out, "results.md"), "w").write("\n".join(md) + "\n")
PY
