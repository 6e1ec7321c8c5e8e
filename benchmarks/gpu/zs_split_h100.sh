#!/usr/bin/env bash
# Session 38, call 7: the scales (fp16) and zero points (one byte) as two TMA boxes a step, 3 bytes a group and
# channel where one int32 takes 4 (patches/zero_scales_split.patch, on 5762560: awq_wgmma_t.ZeroScales). In a copy
# of this tree with the patch applied: the wgmma_t GPU tests (every config against float64; TESTS overrides the -k
# filter) and the engine's AWQ GPU tests, then experiments/zs_bytes_probe.py on 7B down and gate_up at group 128,
# M = 1, 4, 16, for this tree and the patched copy in turn, ROUNDS times.
# Outcome (RESULTS.md "Session 38"): 7B down 0.04-0.08 us faster at M = 1-4, M = 16 and gate_up within the spread;
# one config of the float64 test failed with a misaligned address; not kept.
# nvidia-h100-x1, ~4 minutes.
source benchmarks/gpu/env.sh
root=$PWD
variant_tree /tmp/zs_split pagedawq/kernels/awq_wgmma_t.py patch:benchmarks/gpu/patches/zero_scales_split.patch || exit 1
(cd /tmp/zs_split && timeout 240 python -m pytest -q -x tests/test_awq_wgmma_t.py -k "${TESTS:-gpu}") \
  > "$OUT/wgmma_t_tests.log" 2>&1
tail -1 "$OUT/wgmma_t_tests.log"; grep -E "^E " "$OUT/wgmma_t_tests.log" | head -20 | cut -c1-300
(cd /tmp/zs_split && timeout 200 python -m pytest -q -x tests/test_gpu_engine.py -k "awq") > "$OUT/engine_awq_tests.log" 2>&1
tail -1 "$OUT/engine_awq_tests.log"; grep -E "^E " "$OUT/engine_awq_tests.log" | head -10 | cut -c1-300
for round in $(seq "${ROUNDS:-2}"); do
  for t in "main:$root" "split:/tmp/zs_split"; do
    name=${t%%:*}; dir=${t#*:}
    (cd "$dir" && TRITON_CACHE_DIR=/tmp/tc_$name PYTHONPATH="$dir:$PYTHONPATH" timeout 150 \
       python benchmarks/experiments/zs_bytes_probe.py --groups 128 --rounds 3) \
      > "$OUT/zs_${name}_r$round.log" 2>&1
    grep -E "^7B|Error" "$OUT/zs_${name}_r$round.log" | sed "s/^/$name r$round: /"
  done
done
