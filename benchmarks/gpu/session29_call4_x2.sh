#!/usr/bin/env bash
# Session 29, calls 3-4 (call 3 stopped at the new GPU test: the tiny model holds 256 tokens):
# decode graphs per context bucket, the first rule (choose_num_kv_splits at the bound: 4 splits up
# to 512 tokens). GPU tests of the graphs and the attention splits, this tree against .abmain
# (bbb33ef) at TP=1 and TP=2 (2 rounds), then this tree's tp_suite at 1000 prompts. carry: [".raycarry", ".abmain"].
source benchmarks/gpu/env.sh
timeout 200 python -m pytest -q tests/test_gpu_engine.py tests/test_attention_kernels.py -k "graph or split" -x \
  > "$OUT/tests.log" 2>&1
tail -2 "$OUT/tests.log"; grep -q " passed" "$OUT/tests.log" && ! grep -q "failed" "$OUT/tests.log" || exit 1
RUNS=2 SIZES="1 2" bash benchmarks/gpu/ab_tp_x2.sh
(cd benchmarks && timeout 200 python tp_suite.py --sizes 1 2 --skip-correctness --num-prompts 1000 \
   > "$OUT/tp_suite.log" 2>&1)
grep -E "^latency|^graph|^throughput|failed" "$OUT/tp_suite.log" | cut -c1-150
