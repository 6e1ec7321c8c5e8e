#!/usr/bin/env bash
# Issues 4/5, one H100: the Hopper "wgmma" AWQ GEMM path (pagedawq/kernels/awq_wgmma.py).
# 1. Its GPU tests: every config against float64 (odd M, groups 64/128; all failures listed),
#    the default choice and a CUDA graph.
# 2. kernels.py --wgmma: each config and the default choice at M = 64-512 against cuBLAS and the
#    path taken without it, on the Llama-2-7B layers and the 13B/TP=2 gate_up.
# 3. AWQ throughput (1000 x 512/128, Llama-2-7B shape) without and then with the path, same run.
# carry: none; about 5 minutes.
source benchmarks/gpu/env.sh
timeout 120 python -m pytest -q -rf --tb=short tests/test_awq_wgmma.py > "$OUT/wgmma_tests.log" 2>&1
grep -E "passed|failed|^E  |^\(" "$OUT/wgmma_tests.log" | head -40
cd benchmarks
timeout 170 python kernels.py --wgmma > "$OUT/wgmma_sweep.log" 2>&1
grep -v Warn "$OUT/wgmma_sweep.log" | tail -24
for off in 1 0; do
  PAGEDAWQ_DISABLE_WGMMA=$off timeout 100 python throughput.py --model llama-2-7b --load-format dummy \
    --dtype float16 --quantization awq --num-prompts 1000 >> "$OUT/throughput_ab.log" 2>&1
  echo "PAGEDAWQ_DISABLE_WGMMA=$off: $(grep -E 'tokens/s|Throughput' "$OUT/throughput_ab.log" | tail -1)"
done
