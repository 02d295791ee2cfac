#!/usr/bin/env bash
# Installs what convkit needs from Debian's packages (skips apt when everything is present).
# The CUDA backend is built too when the CUDA toolkit with cuDNN is in /usr/local/cuda.
set -euo pipefail
pkgs=(cmake ninja-build g++ libgtest-dev libbenchmark-dev libdnnl-dev libopenblas-dev libcli11-dev
      python3 python3-numpy python3-torch)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
