#!/usr/bin/env bash
# The warp-specialised "wgmma_t" kernel with K phases at up to 64 tokens (awq_configs.ws_small_config),
# one call on nvidia-h100-x1, about 7 minutes: GPU tests of the Hopper kernels (every config against
# float64, SiLU epilogue, PDL chain, CUDA graphs) and the engine; then the config sweep at
# M = 1, 16, 32, 64 on the Llama-2-7B, 13B/TP=2 and 70B/TP=8 layers (cuBLAS, the current choice,
# each candidate: $OUT/wgmma_t_sweep.csv, best per row in the log). carry: none.
source benchmarks/gpu/env.sh
timeout 300 python -m pytest -q -rf --tb=short tests/test_awq_wgmma_t.py tests/test_gpu_engine.py > "$OUT/tests.log" 2>&1
grep -E "passed|failed|^E  " "$OUT/tests.log" | head -30
cd benchmarks
timeout 280 python kernels.py --wgmma-t --ms 1 16 32 64 --out-dir "$OUT" > "$OUT/wgmma_t_small_sweep.log" 2>&1
echo "sweep exit $?"
grep -vE "Warn|^\s*$" "$OUT/wgmma_t_small_sweep.log" | tail -50
