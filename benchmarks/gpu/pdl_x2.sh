#!/usr/bin/env bash
# Programmatic dependent launch (pagedawq/kernels/pdl.py) on a 2-GPU machine, one call:
# 1. GPU tests with PDL on: the engine against transformers, the small kernels, the Hopper AWQ path
#    (a norm -> GEMM chain in a CUDA graph) and the all-reduce kernels on 2 ranks.
# 2. 7B decode, fp16 and AWQ, with and without PDL (e2e_suite.py decode no_pdl), on GPU 0.
# 3. 13B AWQ batch-1 latency at TP=1 and TP=2 (issue 6), then TP=2 without PDL.
# carry: [".raycarry"]; about 8 minutes.
source benchmarks/gpu/env.sh
timeout 200 python -m pytest -q -rf --tb=short tests/test_gpu_engine.py tests/test_fused_ops.py \
  tests/test_attention_kernels.py tests/test_one_shot_allreduce.py > "$OUT/tests.log" 2>&1
grep -E "passed|failed|^E  " "$OUT/tests.log" | head -20
timeout 60 python -m pytest -q -rf --tb=short tests/test_awq_wgmma_t.py -k "pdl or cuda_graph" > "$OUT/tests_wgmma_t.log" 2>&1
grep -E "passed|failed|^E  " "$OUT/tests_wgmma_t.log" | head -10
cd benchmarks
CUDA_VISIBLE_DEVICES=0 timeout 150 python e2e_suite.py --sections decode no_pdl --out "$OUT/e2e.json" > "$OUT/e2e.log" 2>&1
grep -E "^decode|^prefill|failed|^device" "$OUT/e2e.log"
timeout 200 python tp_suite.py --tp 2 --num-prompts 0 > "$OUT/tp2.log" 2>&1
grep -E "^latency|^correct|failed|^\[" "$OUT/tp2.log"
PAGEDAWQ_DISABLE_PDL=1 timeout 100 python tp_suite.py --tp 2 --sizes 2 --skip-correctness --num-prompts 0 \
  > "$OUT/tp2_nopdl.log" 2>&1
grep -E "^latency|failed" "$OUT/tp2_nopdl.log"
