#!/usr/bin/env bash
# Issue 6 on 2 GPUs: Llama-2-13B shape (AWQ), TP=1 vs TP=2 with the engine's defaults (asynchronous
# scheduling, one-shot all-reduce): correctness, batch-1 latency, throughput 1000 x 512/128, and TP=2
# latency again with NCCL only; TP=2 latency without the fused all-reduce + RMSNorm (A/B); and
# latencies with --tune-kernels (TUNE=1). carry: [".raycarry"]; about 7 minutes.
source benchmarks/gpu/env.sh
cd benchmarks
timeout 330 python tp_suite.py --tp 2 --num-prompts 1000 --compare-allreduce > "$OUT/tp2.log" 2>&1
grep -E "^latency|^throughput|^correct|failed|^\[" "$OUT/tp2.log"
# A/B of the fused all-reduce + residual add + RMSNorm (on by default when its start-up check passes).
# (this one run starts its ranks without Ray, which also checks the mp executor on GPUs)
PAGEDAWQ_DISABLE_FUSED_ALLREDUCE_NORM=1 timeout 80 python tp_suite.py --tp 2 --sizes 2 --skip-correctness \
  --num-prompts 0 --distributed-executor-backend mp > "$OUT/tp2_unfused_norm.log" 2>&1
grep -E "^latency|failed" "$OUT/tp2_unfused_norm.log"
# The same latencies with the GEMV launch configurations tuned on this GPU for these shapes.
if [ -n "$TUNE" ]; then  # session 5: --tune-kernels did not pay at 7B/TP=1 (gemv_h100.sh)
  timeout 150 python tp_suite.py --tp 2 --skip-correctness --num-prompts 0 --tune-kernels > "$OUT/tp2_tuned.log" 2>&1
  grep -E "^latency|failed|GEMV" "$OUT/tp2_tuned.log"
fi
