#!/usr/bin/env bash
# Issues 4/5, one H100: the Hopper "wgmma" AWQ GEMM path (pagedawq/kernels/awq_wgmma.py).
# 1. Its GPU tests: every config against float64 (odd M, groups 64/128, split-K; all failures
#    listed), the default choice and a CUDA graph.
# 2. kernels.py --wgmma: each config (tiles x split-K) and the default choice at M = 64-512 against
#    cuBLAS and the path taken without it, on the Llama-2-7B layers and the 13B/TP=2 gate_up.
# 3. Throughput (1000 x 512/128, Llama-2-7B shape): fp16, AWQ, AWQ without the path, then fp16 and AWQ
#    again, same machine. carry: none; about 7 minutes.
source benchmarks/gpu/env.sh
timeout 120 python -m pytest -q -rf --tb=short tests/test_awq_wgmma.py > "$OUT/wgmma_tests.log" 2>&1
grep -E "passed|failed|^E  |^\(" "$OUT/wgmma_tests.log" | head -40
cd benchmarks
timeout 170 python kernels.py --wgmma > "$OUT/wgmma_sweep.log" 2>&1
grep -v Warn "$OUT/wgmma_sweep.log" | tail -24
for run in fp16 "awq 0" "awq 1" fp16 "awq 0"; do   # fp16 and AWQ twice: the run-to-run spread
  set -- $run
  q=""; [ "$1" = awq ] && q="--quantization awq"
  PAGEDAWQ_DISABLE_WGMMA=${2:-0} timeout 100 python throughput.py --model llama-2-7b --load-format dummy \
    --dtype float16 $q --num-prompts 1000 >> "$OUT/throughput_ab.log" 2>&1
  echo "$1 PAGEDAWQ_DISABLE_WGMMA=${2:-0}: $(grep -E 'Throughput' "$OUT/throughput_ab.log" | tail -1)"
done
