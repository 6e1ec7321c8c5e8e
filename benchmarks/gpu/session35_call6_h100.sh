#!/usr/bin/env bash
# As run in session 35, on the first version of the hint (every launch of the wgmma_t kernels hinted);
# the merged version hints launches of one token tile only (STREAM_W): gpu/l2_hints_x2.sh measures it.
# Session 35, call 6: L2 evict-first hints on the weight streams (pagedawq/kernels/l2_hints.py) and,
# as a variant, on the decode kernel's KV loads (patches/decode_kv_evict_first.patch).
# nvidia-h100-x1, carry [".abmain"] (main without the hints); ~8 minutes:
# 1. GPU tests of the hinted wgmma_t kernels (every config against float64, PDL chain, K phases);
# 2. the 13B AWQ batch-1 step and graph at TP=1 (tp_suite.py --sizes 1), ROUNDS rounds of
#    main / hints / hints + KV, each tree with its own Triton cache (the hook is not in 3.6's keys).
set -u
source benchmarks/gpu/env.sh
root=$PWD
timeout 200 python -m pytest -q tests/test_awq_wgmma_t.py -k "gpu_every_config or gpu_pdl_chain or gpu_decode_gate_up" \
  > "$OUT/tests.log" 2>&1
tail -2 "$OUT/tests.log"
variant_tree /tmp/kv pagedawq/kernels/paged_attention.py patch:benchmarks/gpu/patches/decode_kv_evict_first.patch
for r in $(seq 1 "${ROUNDS:-2}"); do
  for spec in main:$root/.abmain hints:$root kv:/tmp/kv; do
    tree_suite "${spec%%:*}" "${spec#*:}" 110 "tp1_${spec%%:*}_r$r" --sizes 1 --skip-correctness --num-prompts 0
  done
done
