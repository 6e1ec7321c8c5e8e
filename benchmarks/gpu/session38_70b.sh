#!/usr/bin/env bash
# Session 38: issue 7's 70B AWQ rows at TP=1 and TP=2 with the start-up warm-up. The rows recorded
# before session 37 compiled kernels inside their timed throughput runs. For each size in SIZES:
# tp_suite.py's batch-1 latency and 1000 x 512/128 throughput, and for TP > 1 the all-reduce share of
# the kernel time (decode_profile.py).
# SIZES=1 on nvidia-h100-x1 (~6 minutes on a fresh machine); SIZES=2 on nvidia-h100-x2, carry
# [".raycarry"] (~7 minutes). NO_PROFILE=1 skips the all-reduce share.
# Outcome (RESULTS.md "Session 38"): TP=1 13.961 ms/token, 5.38 req/s; TP=2 7.629 ms/token, 10.73 req/s,
# all-reduce 7% of rank 0's kernel time.
source benchmarks/gpu/env.sh
cd benchmarks
for tp in ${SIZES:-2}; do
  timeout 420 python tp_suite.py --model llama-2-70b --tp "$tp" --sizes "$tp" --skip-correctness --num-prompts 1000 \
    > "$OUT/tp_70b_tp$tp.log" 2>&1
  tr '\r' '\n' < "$OUT/tp_70b_tp$tp.log" | grep -E "^kv cache|warm-up:|^latency|^graph|^throughput|failed|Error" \
    | cut -c1-200
  if [ "$tp" -gt 1 ] && [ -z "${NO_PROFILE:-}" ]; then
    timeout 200 python decode_profile.py --model llama-2-70b --quantization awq --tp "$tp" --no-table \
      > "$OUT/profile_tp$tp.log" 2>&1
    grep -E "us/token|rank 0" "$OUT/profile_tp$tp.log"
  fi
done
