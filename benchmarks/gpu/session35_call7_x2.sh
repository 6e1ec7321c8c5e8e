#!/usr/bin/env bash
# As run in session 35, on the first version of the hint (every launch of the wgmma_t kernels hinted);
# the merged version hints launches of one token tile only (STREAM_W): gpu/l2_hints_x2.sh measures it.
# Session 35, call 7: the L2 evict-first hints on 2×H200 (issue 6): the 13B AWQ batch-1 step and
# graph at TP=1 and TP=2 for main (.abmain), the hints on the weight streams (this tree) and the
# hints + evict-first KV loads in the decode kernel (patches/decode_kv_evict_first.patch), each tree
# with its own Triton cache. nvidia-h200-x2 with needs_h200, carry [".raycarry", ".abmain"]; ~7 minutes.
set -u
source benchmarks/gpu/env.sh
root=$PWD
variant_tree /tmp/kv pagedawq/kernels/paged_attention.py patch:benchmarks/gpu/patches/decode_kv_evict_first.patch
for spec in main:$root/.abmain hints:$root kv:/tmp/kv; do
  tree_suite "${spec%%:*}" "${spec#*:}" 170 "tp_${spec%%:*}" --tp 2 --skip-correctness --num-prompts 0
done
