#!/usr/bin/env bash
# Installs what is missing, builds, runs the main job, then the whole test suite twice: the
# Release build (unit tests, CLI tests, PyTorch-oracle suites per engine; GPU tests skip without
# a GPU) and the AddressSanitizer + UBSan build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/main.sh
source scripts/env.sh
ctest --preset default -j2
cmake --preset asan -G Ninja >/dev/null
cmake --build --preset asan -j"$(nproc)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --preset asan -j2
