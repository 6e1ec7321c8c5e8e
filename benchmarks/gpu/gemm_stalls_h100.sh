#!/usr/bin/env bash
# Where a batch-1 AWQ GEMM's warps stall, per SASS instruction (ncu warp-state sampling; session 16
# found ~38% of warp cycles in an L1TEX-scoreboard wait in a loop without global loads). Each line
# of SHAPES is "K N [CONFIG]" (CONFIG as ncu_gemm.py --config; none: awq_gemm's choice); the default
# compares, on 13B/TP=2 qkv at M = 1, the rule's 2-step ring, a 4-step ring and the K-phase
# kernel, and the rule on 7B down. Per run: the ncu report's per-instruction CSV
# ($OUT/stalls_<i>.csv) and its 25 instructions with the most samples. One GPU, ~4 minutes.
source benchmarks/gpu/env.sh
SHAPES=${SHAPES:-"5120 7680
5120 7680 64,8,4,2,4
5120 7680 64,8,8,1,4,2,2
11008 4096"}
i=0
while read -r k n cfg; do
  [ -z "$k" ] && continue
  i=$((i + 1)); rep=/tmp/gemm_$i
  (cd benchmarks && timeout 100 ncu --clock-control none --kernel-name regex:awq_wgmma_t --launch-skip 4 --launch-count 1 \
     --section SourceCounters --section WarpStateStats --section SpeedOfLight -f -o "$rep" \
     python ncu_gemm.py --k "$k" --n "$n" --m 1 ${cfg:+--config $cfg} > "$OUT/ncu_$i.log" 2>&1)
  grep -E "rel err|Duration|DRAM Throughput" "$OUT/ncu_$i.log" | sed "s/^ */run $i ($k x $n ${cfg:-rule}): /"
  ncu --import "$rep.ncu-rep" --page source --csv --print-source sass > "$OUT/stalls_$i.csv" 2>&1 \
    || ncu --import "$rep.ncu-rep" --page details --print-details all > "$OUT/stalls_$i.csv" 2>&1
  python benchmarks/stall_table.py "$OUT/stalls_$i.csv" --top 25 | sed "s/^/run $i: /" | cut -c1-200
done <<< "$SHAPES"
