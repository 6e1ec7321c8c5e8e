#!/usr/bin/env bash
# Where a batch-1 AWQ GEMM's warps stall, per SASS instruction (ncu warp-state sampling; session 16
# found ~38% of warp cycles in an L1TEX-scoreboard wait in a loop without global loads). For the
# one-warpgroup kernel on 13B/TP=2 qkv and 7B down at M = 1 (awq_gemm's own choice; SHAPES
# overrides, "K N" pairs): ncu report -> per-instruction CSV ($OUT/stalls_K_N.csv) and the
# 25 instructions with the most samples. One GPU, ~3 minutes.
source benchmarks/gpu/env.sh
SHAPES=${SHAPES:-"5120 7680;11008 4096"}
IFS=';' read -ra shapes <<< "$SHAPES"
for s in "${shapes[@]}"; do
  read -r k n <<< "$s"
  rep=/tmp/gemm_${k}_${n}
  (cd benchmarks && timeout 120 ncu --clock-control none --kernel-name regex:awq_wgmma_t --launch-skip 4 --launch-count 1 \
     --section SourceCounters --section WarpStateStats --section SpeedOfLight -f -o "$rep" \
     python ncu_gemm.py --k "$k" --n "$n" --m 1 > "$OUT/ncu_${k}_${n}.log" 2>&1)
  ncu --import "$rep.ncu-rep" --page source --csv --print-source sass > "$OUT/stalls_${k}_${n}.csv" 2>&1 \
    || ncu --import "$rep.ncu-rep" --page details --print-details all > "$OUT/stalls_${k}_${n}.csv" 2>&1
  python benchmarks/stall_table.py "$OUT/stalls_${k}_${n}.csv" --top 25 | sed "s/^/$k x $n: /"
done
