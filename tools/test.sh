#!/usr/bin/env bash
# The whole test suite: bootstrap, build (warnings are errors), ctest over every label.
# SEGQ_SANITIZE=1 builds and tests with AddressSanitizer + UBSan in build-asan/.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
build=build
flags=()
if [ "${SEGQ_SANITIZE:-0}" = 1 ]; then build=build-asan; flags+=(-DSEGQ_SANITIZE=ON); fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${flags[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"${SEGQ_TEST_JOBS:-2}" "$@"
