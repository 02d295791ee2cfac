# Sourced by the scripts: CUDA's compiler on PATH when the toolkit is installed.
if [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
