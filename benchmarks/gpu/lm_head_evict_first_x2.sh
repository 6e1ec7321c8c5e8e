#!/usr/bin/env bash
# Whether the LM head's stream (cuBLAS, default L2 policy, 164-328 MB a step for the 13B) is what
# still evicts the next decode step's launch parameters and norm weights after session 35's hint on
# the AWQ weights (tensor_parallel.md session 35, "Next"). nvidia-h200-x2 with needs_h200, carry
# [".raycarry"] (and ".abmain", main before the hint, which is then timed first); ~7-9 minutes:
# 1. experiments/l2_cold_start_probe.py --head-mb 328 (GPU 0): K's cost after evict-first pairs with
#    a default-policy or an evict-first LM-head-sized read once a graph;
# 2. a tree with patches/lm_head_evict_first.patch (the batch-1 LM head as an evict-first Triton
#    GEMV): its GPU test and experiments/lm_head_gemv_probe.py (GEMV against cuBLAS, µs and GB/s);
# 3. the 13B AWQ batch-1 step and graph at TP=1 and TP=2 of .abmain (if carried), this tree, that
#    tree, and that tree with patches/decode_kv_evict_first.patch as well, each with its own Triton
#    cache.
set -u
source benchmarks/gpu/env.sh
root=$PWD
timeout 120 python benchmarks/experiments/l2_cold_start_probe.py --head-mb 328 > "$OUT/probe.log" 2>&1
tail -8 "$OUT/probe.log"
variant_tree /tmp/lmh pagedawq/models/layers/embedding.py patch:benchmarks/gpu/patches/lm_head_evict_first.patch
variant_tree /tmp/lmhkv pagedawq/models/layers/embedding.py patch:benchmarks/gpu/patches/lm_head_evict_first.patch
(cd /tmp/lmhkv && git apply "$root/benchmarks/gpu/patches/decode_kv_evict_first.patch") || echo "kv patch failed"
(cd /tmp/lmh && timeout 90 python -m pytest -q tests/test_streaming_linear.py 2>&1 | tail -1 \
   && timeout 90 python benchmarks/experiments/lm_head_gemv_probe.py 2>&1 | tail -4)
if [ -d .abmain ]; then tree_suite main "$root/.abmain" 170 tp_main --tp 2 --skip-correctness --num-prompts 0; fi
tree_suite hints "$root" 170 tp_hints --tp 2 --skip-correctness --num-prompts 0
tree_suite lmh /tmp/lmh 170 tp_lmh --tp 2 --skip-correctness --num-prompts 0
tree_suite lmhkv /tmp/lmhkv 170 tp_lmhkv --tp 2 --skip-correctness --num-prompts 0
