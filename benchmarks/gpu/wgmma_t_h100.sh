#!/usr/bin/env bash
# Issues 4/5, one H100: the transposed Hopper AWQ kernel (pagedawq/kernels/awq_wgmma_t.py, the
# "wgmma_t" path: weights repacked at load, W^T as wgmma's register operand).
# 1. GPU tests: every config against float64 (M = 1-1024, groups 64/128, split-K, 1/2/4 K tiles a
#    step; all failures listed), awq_gemm's choice + a CUDA graph, and the engine tests.
# 2. kernels.py --wgmma-t: configs around the default rule at M = 1-2048 against cuBLAS and the rule's
#    own choice (wgmma_t_sweep.csv in $OUT). SKIP_E2E=1 stops here.
# 3. Throughput (1000 x 512/128, Llama-2-7B shape): fp16, AWQ, AWQ without the path, fp16, AWQ.
# carry: none; about 12 minutes.
source benchmarks/gpu/env.sh
timeout 300 python -m pytest -q -rf --tb=short tests/test_awq_wgmma_t.py tests/test_gpu_engine.py \
  > "$OUT/wgmma_t_tests.log" 2>&1
grep -E "passed|failed|^E  |^\(" "$OUT/wgmma_t_tests.log" | head -40
cd benchmarks
timeout 420 python kernels.py --wgmma-t --out-dir "$OUT" > "$OUT/wgmma_t_sweep.log" 2>&1
grep -vE "Warn|^\s*$" "$OUT/wgmma_t_sweep.log" | tail -80
[ -n "$SKIP_E2E" ] && exit 0
for run in fp16 "awq 0" "awq 1" fp16 "awq 0"; do
  set -- $run
  q=""; [ "$1" = awq ] && q="--quantization awq"
  PAGEDAWQ_DISABLE_WGMMA_T=${2:-0} timeout 110 python throughput.py --model llama-2-7b --load-format dummy \
    --dtype float16 $q --num-prompts 1000 >> "$OUT/throughput_ab.log" 2>&1
  echo "$1 PAGEDAWQ_DISABLE_WGMMA_T=${2:-0}: $(grep -E 'Throughput' "$OUT/throughput_ab.log" | tail -1)"
done
