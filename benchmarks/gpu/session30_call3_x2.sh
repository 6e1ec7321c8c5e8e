#!/usr/bin/env bash
# Session 30, call 3 (nvidia-h200-x2 with needs_h200; carry .raycarry and .abp1): the record of main
# (c924dd4) for issue 6 on 2xH200: TP=2 greedy tokens against TP=1 (random GQA model, fp32 and AWQ),
# then the 13B batch-1 latency and 1000-prompt throughput at TP=1 and TP=2; then the ONE_TILE
# variant alone (.abp1: a split of one key tile looks its blocks up before the sequence length)
# against this tree at TP=2 (ab_tp_x2.sh, RUNS rounds, default 2).
# .abp1 was a trimmed copy of main (git ls-files pagedawq benchmarks/*.py) with
# gpu/patches/decode_one_tile.patch applied (lost; not merged).
source benchmarks/gpu/env.sh
(cd benchmarks && timeout 270 python tp_suite.py --sizes 2 --num-prompts 0 > "$OUT/tp_check.log" 2>&1)
grep -iE "^correct|^latency|^graph" "$OUT/tp_check.log" | cut -c1-170
(cd benchmarks && timeout 200 python tp_suite.py --sizes 1 2 --skip-correctness --num-prompts 1000 > "$OUT/tp_1000.log" 2>&1)
grep -E "^latency|^graph|^throughput|failed" "$OUT/tp_1000.log" | cut -c1-170
TESTS= RUNS=${RUNS:-2} SIZES=2 ROOTS="main:. onetile:.abp1" bash benchmarks/gpu/ab_tp_x2.sh
