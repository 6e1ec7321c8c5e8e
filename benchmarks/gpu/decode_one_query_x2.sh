#!/usr/bin/env bash
# Batch-1 attention without tl.dot for one query head a program (issue 6, session 23's "Next"):
# patches/decode_one_query_without_dot.patch in a copy of this tree. In one call:
# - the patched tree's attention GPU tests;
# - attention.py's decode rows (the default key tile, then 16, 32, 64) for this tree and the patched one;
# - the 13B AWQ batch-1 step and graph at TP=1 and TP=2 of this tree, the patched one and .abmain
#   (main before `decode_block_n`: `git archive 5c2f157 pagedawq tests benchmarks | tar -x -C .abmain`),
#   RUNS rounds (default 1).
# carry: [".raycarry", ".abmain"]; ~7-8 minutes.
source benchmarks/gpu/env.sh
variant_tree /tmp/variant_onequery pagedawq/kernels/paged_attention.py patch:benchmarks/gpu/patches/decode_one_query_without_dot.patch || exit 1
(cd /tmp/variant_onequery && PYTHONPATH=/tmp/variant_onequery:$PYTHONPATH timeout 150 python -m pytest -q tests/test_attention_kernels.py > "$OUT/onequery_tests.log" 2>&1)
tail -1 "$OUT/onequery_tests.log"; grep "^FAILED" "$OUT/onequery_tests.log"
for t in tree:. onequery:/tmp/variant_onequery; do
  (cd "${t#*:}/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 100 python attention.py --sections decode \
     --decode-block-n 16 32 64 > "$OUT/attention_${t%%:*}.log" 2>&1)
  grep -v "^{" "$OUT/attention_${t%%:*}.log" | grep -v "^device\|^case" | sed "s/^/${t%%:*}: /" | cut -c1-150
done
RUNS=${RUNS:-1} ROOTS="tree:. onequery:/tmp/variant_onequery base:.abmain" bash benchmarks/gpu/ab_tp_x2.sh
