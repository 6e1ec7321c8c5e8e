#!/usr/bin/env bash
# The warp-specialised "wgmma_t" kernel (pagedawq/kernels/awq_wgmma_t_ws.py, above 256 tokens), one
# call on nvidia-h100-x1: GPU tests of the Hopper path and the engine; the config sweep on the 7B
# layers at M = 256-4096 (cuBLAS, the current choice, each candidate: results/wgmma_t_sweep.csv);
# 7B e2e decode + prefill (fp16, AWQ) and offline throughput. carry: none; about 8 minutes.
source benchmarks/gpu/env.sh
timeout 240 python -m pytest -q -rf --tb=short tests/test_awq_wgmma_t.py tests/test_gpu_engine.py > "$OUT/tests.log" 2>&1
grep -E "passed|failed|^E  " "$OUT/tests.log" | head -20
cd benchmarks
timeout 150 python kernels.py --wgmma-t --wgmma-t-models llama2-7b --ms 256 512 1024 2048 4096 --out-dir "$OUT" \
  > "$OUT/wgmma_t_ws_sweep.log" 2>&1
grep -vE "Warn|^\s*$" "$OUT/wgmma_t_ws_sweep.log" | tail -22
timeout 150 python e2e_suite.py --sections decode throughput --num-prompts 500 > "$OUT/e2e.log" 2>&1
grep -E "^decode|^prefill|^throughput|failed" "$OUT/e2e.log"
