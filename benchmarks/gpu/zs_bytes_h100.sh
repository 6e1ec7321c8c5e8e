#!/usr/bin/env bash
# Session 38: what the zero/scale stream costs a batch-1 GEMM (issue 4: 7B down at M <= 16 is 1-2% short of
# 3.0x cuBLAS). experiments/zs_bytes_probe.py at group 128 on 7B down, M = 1, 4, 16, for three trees in turn:
# - main: this tree (one zero/scale TMA box of 2 group rows a step);
# - half: patches/zs_half_rows.patch: the box brings 1 of the 2 rows (half the zero/scale bytes, the same
#   instructions; the second row's values are stale, so the outputs are wrong: timing only);
# - two: patches/zs_two_boxes.patch: the same bytes as main in two boxes of one row (the cost of one more TMA
#   and the CTA barrier Triton's membar pass puts before it, each step).
# A compact zero/scale layout (3 or 2.5 bytes a channel instead of 4) needs a second descriptor, so it would pay
# about (main - half) x 0.5-0.75 - (two - main).
# nvidia-h100-x1, ~4 minutes.
source benchmarks/gpu/env.sh
root=$PWD
for v in zs_half_rows zs_two_boxes; do
  variant_tree "/tmp/$v" pagedawq/kernels/awq_wgmma_t.py "patch:benchmarks/gpu/patches/$v.patch" || exit 1
done
for round in 1 2; do
  for t in "main:$root" "half:/tmp/zs_half_rows" "two:/tmp/zs_two_boxes"; do
    name=${t%%:*}; dir=${t#*:}
    (cd "$dir" && TRITON_CACHE_DIR=/tmp/tc_$name PYTHONPATH="$dir:$PYTHONPATH" timeout 150 \
       python benchmarks/experiments/zs_bytes_probe.py --layers "7B down" --groups 128 --rounds 3) \
      > "$OUT/zs_${name}_r$round.log" 2>&1
    grep -E "^7B|Error" "$OUT/zs_${name}_r$round.log" | sed "s/^/$name r$round: /"
  done
done
