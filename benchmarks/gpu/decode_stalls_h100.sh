#!/usr/bin/env bash
# Where the batch-1 decode attention kernel's warps stall (ncu warp-state sampling per SASS
# instruction), 13B shapes with the rotary inside: 20 heads / 27 splits (TP=2) and 40 / 14 (TP=1),
# context 128, for this tree.
# Per run: ncu's duration, registers and occupancy, the per-instruction CSV ($OUT/stalls_<i>.csv)
# and its 25 instructions with the most samples. One GPU, ~3 minutes.
source benchmarks/gpu/env.sh
roots=("tree:.")
i=0
for root in "${roots[@]}"; do
  for shape in "20 27" "40 14"; do
    set -- $shape
    i=$((i + 1)); rep=/tmp/decode_$i
    (cd "${root#*:}/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 100 ncu --clock-control none \
       --kernel-name regex:_decode_kernel --launch-skip 3 --launch-count 1 --section SourceCounters \
       --section WarpStateStats --section SpeedOfLight --section LaunchStats --section Occupancy -f -o "$rep" \
       python ncu_decode.py --heads "$1" --splits "$2" > "$OUT/ncu_$i.log" 2>&1)
    ncu --import "$rep.ncu-rep" --page details > "$OUT/details_$i.txt" 2>&1
    grep -hE "rel err|Duration|Registers Per Thread|Achieved Occupancy|Theoretical Occupancy" "$OUT/ncu_$i.log" \
      "$OUT/details_$i.txt" | sed "s/^ */run $i (${root%%:*}, $1 heads, $2 splits): /"
    ncu --import "$rep.ncu-rep" --page source --csv --print-source sass > "$OUT/stalls_$i.csv" 2>&1
    python benchmarks/stall_table.py "$OUT/stalls_$i.csv" --top 25 | sed "s/^/run $i: /" | cut -c1-200
  done
done
