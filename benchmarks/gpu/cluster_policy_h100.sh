#!/usr/bin/env bash
# Does the cluster scheduling policy place split-K clusters of 4 evenly (session 18)? For each
# policy clusters.SCHEDULING_POLICY can ask for: the split layers' time from DRAM and resident in
# L2 (gemm_residency.py), and per SM the CTAs a launch got (ncu). One GPU, ~4 minutes.
source benchmarks/gpu/env.sh
cd benchmarks
M="sm__ctas_launched.min,sm__ctas_launched.max,sm__ctas_launched.avg,sm__cycles_active.min,sm__cycles_active.max"
M="$M,sm__cycles_active.avg,launch__cluster_max_active"
for policy in ${POLICIES:-spread load_balancing default}; do
  timeout 150 python gemm_residency.py --ms 1 16 --cluster-policy "$policy" \
    --layers "7b down" "7b o" "13b/tp2 down" "13b/tp2 o" "13b/tp2 qkv" 2>&1 | grep -v Warn | sed "s/^/$policy /" \
    | tee -a "$OUT/policy_residency.log"
  for shape in "11008 4096" "6912 5120"; do
    set -- $shape
    timeout 60 ncu --clock-control none --kernel-name regex:awq_wgmma_t --launch-skip 4 --launch-count 1 --metrics "$M" --section LaunchStats \
      python ncu_gemm.py --k "$1" --n "$2" --m 1 --cluster-policy "$policy" 2>&1 \
      | grep -E "sm__|launch__|Policy|rel err|rror" | sed "s/^ */$policy $1x$2: /"
  done | tee -a "$OUT/policy_placement.log"
done
