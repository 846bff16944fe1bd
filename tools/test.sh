#!/usr/bin/env bash
# The whole test suite: bootstrap, then two passes over every ctest label —
#   1. build/       the regular build (warnings are errors; CUDA backend compiled when found),
#   2. build-asan/  AddressSanitizer + UBSan (CPU code only: CUDA is not instrumented).
# SEGQ_SANITIZE=0 runs only pass 1, SEGQ_SANITIZE=1 only pass 2. Extra args go to ctest
# (e.g. `tools/test.sh -L unit`).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh

run_pass() {
  local dir=$1; shift
  echo "== segq tests: $dir ==" >&2
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${cmake_flags[@]}" >/dev/null
  cmake --build "$dir" -j"$(nproc)"
  ctest --test-dir "$dir" --output-on-failure -j"${SEGQ_TEST_JOBS:-2}" "${ctest_args[@]}"
}

ctest_args=("$@")
case "${SEGQ_SANITIZE:-both}" in
  0) cmake_flags=(); run_pass build ;;
  1) cmake_flags=(-DSEGQ_SANITIZE=ON -DSEGQ_CUDA=OFF); run_pass build-asan ;;
  *) cmake_flags=(); run_pass build
     cmake_flags=(-DSEGQ_SANITIZE=ON -DSEGQ_CUDA=OFF); run_pass build-asan ;;
esac
