#!/usr/bin/env bash
# The pushed row-parallel GEMM outputs (session 21) on 4 GPUs: the all-reduce test at 4 ranks
# (pushed GEMM + norm against the unpushed pair, bit for bit), then the Llama-2-70B AWQ shape at
# TP=4, batch 1 (decode_profile.py --breakdown: step and graph alone), and the 13B at TP=2, each with
# and without the pushes (PAGEDAWQ_DISABLE_PUSHED_GEMMS=1). Stops if the test fails.
# carry: [".raycarry"]; ~8 minutes.
source benchmarks/gpu/env.sh
timeout 200 python -m pytest -q tests/test_one_shot_allreduce.py -k all_gpus -x > "$OUT/test_allreduce_4.log" 2>&1
tail -2 "$OUT/test_allreduce_4.log"; grep -q " passed" "$OUT/test_allreduce_4.log" && ! grep -q "failed" "$OUT/test_allreduce_4.log" || exit 1
cd benchmarks
for v in "tree:" "nopush:PAGEDAWQ_DISABLE_PUSHED_GEMMS=1"; do
  env ${v#*:} timeout 150 python decode_profile.py --model llama-2-70b --quantization awq --tp 4 --batch 1 \
    --output-len 32 --breakdown --no-table > "$OUT/tp4_70b_${v%%:*}.log" 2>&1
  grep -E "us/token|graph alone \(rank 0|rror" "$OUT/tp4_70b_${v%%:*}.log" | sed "s/^/${v%%:*} 70B TP=4: /" | cut -c1-170
done
for v in "tree:" "nopush:PAGEDAWQ_DISABLE_PUSHED_GEMMS=1"; do
  env ${v#*:} timeout 110 python tp_suite.py --sizes 2 --skip-correctness --num-prompts 0 > "$OUT/tp2_13b_${v%%:*}.log" 2>&1
  grep -E "^latency|^graph|failed" "$OUT/tp2_13b_${v%%:*}.log" | sed "s/^/${v%%:*}: /" | cut -c1-140
done
