#!/usr/bin/env bash
# Issue 7 on 4 GPUs, one call: the one-shot all-reduce kernel across processes (test, then latency
# against NCCL at 4 ranks), the Llama-2-70B shape (AWQ) at TP=2 and TP=4 (greedy correctness at
# TP=4, batch-1 latency, throughput 1000 x 512/128), then TP=4's per-token kernel time and all-reduce
# share. Asynchronous scheduling is the default. carry: [".raycarry"]; about 9.5 minutes.
# If the kernel test fails, every run uses NCCL (and says so in allreduce_test.log).
source benchmarks/gpu/env.sh
if ! timeout 90 python -m pytest -q -x tests/test_one_shot_allreduce.py > "$OUT/allreduce_test.log" 2>&1; then
  export PAGEDAWQ_DISABLE_SYMM_MEM_ALLREDUCE=1
fi
tail -1 "$OUT/allreduce_test.log"; echo
cd benchmarks
if [ -z "$PAGEDAWQ_DISABLE_SYMM_MEM_ALLREDUCE" ]; then
  timeout 45 python allreduce.py --world-size 4 --dtype float16 > "$OUT/allreduce_w4.log" 2>&1; grep -v Warn "$OUT/allreduce_w4.log" | tail -10
fi
timeout 340 python tp_suite.py --model llama-2-70b --tp 4 --sizes 2 4 --num-prompts 1000 > "$OUT/tp_70b.log" 2>&1
grep -E "^latency|^throughput|^correct|failed|^\[" "$OUT/tp_70b.log"
timeout 100 python decode_profile.py --model llama-2-70b --quantization awq --tp 4 --no-table > "$OUT/profile_tp4.log" 2>&1
grep -E "us/token|rank 0" "$OUT/profile_tp4.log"
