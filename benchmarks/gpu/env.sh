# Sourced by the scripts here: safety switches and Python path for the device machines.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .raycarry ]; then
  bash .raycarry/install.sh && export PYTHONPATH=/tmp/raysite:$PYTHONPATH RAY_AUTH_MODE=disabled
fi
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader
