#!/usr/bin/env bash
# The L2 evict-first hint on the weight streams as merged (pagedawq/kernels/l2_hints.py: launches of
# one token tile only, marked by STREAM_W), which no GPU has run yet. Session 35 measured a first
# version that hinted every launch (calls 4-6, RESULTS.md "Session 35"). nvidia-h200-x2 with
# needs_h200, carry [".raycarry", ".abmain"] (.abmain: main before the hint, e.g. `git archive
# af9d0d6`). Two calls:
# STEP=check (~6 minutes): GPU tests of the hinted kernels (in CUDA graphs, the PDL chain, the
#   K-phase gate_up with the silu epilogue, the engine against the dequantized reference; session
#   35's call 6 saw the every-config test alone take minutes to compile cold), then TP=2 greedy
#   tokens against TP=1 (tp_suite.py's correctness check).
# STEP=ab (~8 minutes): the 13B AWQ batch-1 step and graph at TP=1 and TP=2, ROUNDS (default 1)
#   rounds of .abmain, this tree and this tree with the norm weight loaded before the PDL wait
#   (patches/norm_weight_before_the_wait.patch: at TP=1 the weight comes from DRAM once the stream
#   has evicted it, and no kernel writes it), then 1000 x 512/128 throughput at TP=1 of .abmain and
#   this tree (prefill runs unhinted launches; it should not move). Each tree has its own Triton
#   cache: Triton 3.6 does not key its cache on the hook. As run in session 36, on ce8612e; the norm
#   patch is merged since (the script's normw step then fails: 'the edit changed nothing').
set -u
source benchmarks/gpu/env.sh
root=$PWD
if [ "${STEP:-check}" = check ]; then
  timeout 330 python -m pytest -q -x tests/test_awq_wgmma_t.py \
    -k "gpu_awq_gemm_takes_the_path or gpu_awq_gemm_silu_and_mul or gpu_pdl_chain or gpu_decode_gate_up or awq_gpu_kernels_track" \
    "tests/test_gpu_engine.py::test_awq_gpu_kernels_track_dequantized_reference" > "$OUT/tests.log" 2>&1
  tail -3 "$OUT/tests.log"
  (cd benchmarks && timeout 200 python tp_suite.py --tp 2 --sizes 2 --num-prompts 0 > "$OUT/tokens.log" 2>&1)
  grep -E "^correct|^latency|failed" "$OUT/tokens.log" | cut -c1-160
else
  variant_tree /tmp/normw pagedawq/kernels/fused_ops.py patch:benchmarks/gpu/patches/norm_weight_before_the_wait.patch
  for r in $(seq 1 "${ROUNDS:-1}"); do
    tree_suite main "$root/.abmain" 170 "tp_main_r$r" --tp 2 --skip-correctness --num-prompts 0
    tree_suite hints "$root" 170 "tp_hints_r$r" --tp 2 --skip-correctness --num-prompts 0
    tree_suite normw /tmp/normw 170 "tp_normw_r$r" --tp 2 --skip-correctness --num-prompts 0
  done
  tree_suite main "$root/.abmain" 135 thr_main --sizes 1 --skip-correctness --num-prompts 1000
  tree_suite hints "$root" 135 thr_hints --sizes 1 --skip-correctness --num-prompts 1000
fi
