#!/usr/bin/env bash
# Installs what is missing, builds, runs the main job, then the whole test suite: the Release
# build (unit tests, CLI tests, PyTorch-oracle suites per engine; GPU tests skip without a GPU),
# the cpu engine's suites and the Python package's again as on an AVX2-only CPU, and the
# AddressSanitizer + UBSan build (without the Python package: an ASan .so cannot load into python3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/main.sh
source scripts/env.sh
ctest --preset default -j2
# oneDNN honours ONEDNN_MAX_CPU_ISA, so this machine's CPU engine behaves as on a CPU without
# AVX-512 (no bf16 kernels in oneDNN 2.6): what only exists on the development machine's CPU
# cannot hide. The header line of convkit bench shows the ISA in effect.
echo "== cpu engine under ONEDNN_MAX_CPU_ISA=AVX2"
# (sed reads to the end: `head` would close the pipe early and pipefail would fail on SIGPIPE.)
ONEDNN_MAX_CPU_ISA=AVX2 ./build/convkit bench --engine=cpu --mode=corr --dt=bf16 mb1ic16ih8oc16oh8kh3ph1 | sed -n 1p
ONEDNN_MAX_CPU_ISA=AVX2 ctest --preset default -j2 -R '^(Cpu|oracle_cpu$|python$)'
cmake --preset asan -G Ninja >/dev/null
cmake --build --preset asan -j"$(nproc)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --preset asan -j2
