#!/usr/bin/env bash
# The main job: install what is missing, build, and run the ResNet-50 set (23 layers, mb 1) on
# the best available engine in every direction, correctness (against the reference backend) and
# performance, printing a table. Extra arguments go to `convkit bench` (e.g. --dt=bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
source scripts/env.sh
cmake --preset default -G Ninja >/dev/null
cmake --build --preset default -j"$(nproc)"
./build/convkit bench --batch=inputs/resnet_50 --mb=1 --mode=both --dir=FWD_B,BWD_D,BWD_WB --dt=f32 --tag=nhwc "$@"
