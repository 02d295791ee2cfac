#!/usr/bin/env bash
# Installs what is missing, builds, runs the main job, then the whole test suite: the Release
# build (unit tests, CLI tests, PyTorch-oracle suites per engine; GPU tests skip without a GPU),
# the cpu engine's suites and the Python package's again as on an AVX2-only CPU, and the
# AddressSanitizer + UBSan build (without the Python package: an ASan .so cannot load into python3;
# without the 2^31-element tensors of label large, whose 6 GB the Release runs already check),
# then the fuzz harnesses and ThreadSanitizer in their short forms.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/main.sh
source scripts/env.sh
ctest --preset default -j2
# The installed package (ctest above ran the exported-symbol test on the build's libconvkit.so):
# cmake --install into a fresh prefix, then a C program through pkg-config and a C++ one through
# find_package (shared and static), built outside the tree against that prefix only, each checking
# every direction against the reference engine; the symbol test again on the installed library.
echo "== install and the consumers outside the tree"
bash consumers/run.sh build
# oneDNN honours ONEDNN_MAX_CPU_ISA, so this machine's CPU engine behaves as on a CPU without
# AVX-512 (no bf16 kernels in oneDNN 2.6): what only exists on the development machine's CPU
# cannot hide. The header line of convkit bench shows the ISA in effect.
echo "== cpu engine under ONEDNN_MAX_CPU_ISA=AVX2"
# (sed reads to the end: `head` would close the pipe early and pipefail would fail on SIGPIPE.)
ONEDNN_MAX_CPU_ISA=AVX2 ./build/convkit bench --engine=cpu --mode=corr --dt=bf16 mb1ic16ih8oc16oh8kh3ph1 | sed -n 1p
ONEDNN_MAX_CPU_ISA=AVX2 ctest --preset default -j2 -R '^(Cpu|oracle_cpu$|python$|large_tensors_)'
cmake --preset asan -G Ninja >/dev/null
cmake --build --preset asan -j"$(nproc)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --preset asan -j2
# Hostile input, short forms (docs/robustness.md has the long runs): the libFuzzer harnesses
# (clang, ASan + UBSan) replay every saved finding, then run fixed inputs from a fixed seed, so a
# CI run is the same on every machine; ThreadSanitizer over the cache, thread and soak suites
# (8 threads, plans evicted while in use, every result checked against the reference engine).
echo "== fuzzing (scripts/fuzz.sh --ci)"
bash scripts/fuzz.sh --ci
echo "== ThreadSanitizer"
cmake --preset tsan -G Ninja >/dev/null
cmake --build --preset tsan -j"$(nproc)" --target test_soak test_cpu_runtime test_cache
ctest --preset tsan
