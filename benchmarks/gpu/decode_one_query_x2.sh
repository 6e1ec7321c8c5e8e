#!/usr/bin/env bash
# Batch-1 attention without tl.dot for one query head a program (issue 6, session 23's "Next"), two
# patches of this tree: patches/decode_one_query_without_dot.patch (tiles by plain loads) and
# patches/decode_one_query_pipelined.patch (the same loop as a tl.range of 2 stages: cp.async). In one call:
# - each patched tree's attention GPU tests;
# - attention.py's decode rows (the default key tile, then 16, 32, 64) for this tree and each patched one;
# - the 13B AWQ batch-1 step and graph at TP=1 and TP=2 of this tree, the patched ones and .abmain
#   (main before `decode_block_n`: `git archive 5c2f157 pagedawq tests benchmarks | tar -x -C .abmain`),
#   RUNS rounds (default 1).
# carry: [".raycarry", ".abmain"]; ~9 minutes.
source benchmarks/gpu/env.sh
roots=("tree:.")
for name in without_dot pipelined; do
  dir=/tmp/variant_$name
  variant_tree $dir pagedawq/kernels/paged_attention.py patch:benchmarks/gpu/patches/decode_one_query_$name.patch || exit 1
  (cd $dir && PYTHONPATH=$dir:$PYTHONPATH timeout 120 python -m pytest -q tests/test_attention_kernels.py > "$OUT/${name}_tests.log" 2>&1)
  echo "$name tests: $(tail -1 "$OUT/${name}_tests.log")"; grep "^FAILED" "$OUT/${name}_tests.log"
  roots+=("$name:$dir")
done
for t in "${roots[@]}"; do
  (cd "${t#*:}/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 100 python attention.py --sections decode \
     --decode-block-n 16 32 64 > "$OUT/attention_${t%%:*}.log" 2>&1)
  grep -v "^{" "$OUT/attention_${t%%:*}.log" | grep -v "^device\|^case" | sed "s/^/${t%%:*}: /" | cut -c1-150
done
RUNS=${RUNS:-1} ROOTS="${roots[*]} base:.abmain" bash benchmarks/gpu/ab_tp_x2.sh
