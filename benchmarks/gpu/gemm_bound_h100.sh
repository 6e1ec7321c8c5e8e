#!/usr/bin/env bash
# What bounds a batch-1 AWQ GEMM (session 17, RESULTS.md): its time with the weights from DRAM
# against resident in L2 (gemm_residency.py), the line time = fixed + bytes / rate over K at three
# widths next to fp16 cuBLAS (--fit), and, per SM, the CTAs a launch got and the cycles it was
# active (ncu), for the rule and for the layers whose split-K slices sum as clusters of 4.
# One GPU, ~3 minutes.
source benchmarks/gpu/env.sh
cd benchmarks
timeout 250 python gemm_residency.py --ms 1 16 2>&1 | grep -v Warn | tee "$OUT/residency.log"
timeout 250 python gemm_residency.py --fit 4096 7680 13824 --fit-ks 1024 2048 4096 6144 8192 12288 16384 2>&1 \
  | grep -v Warn | tee "$OUT/fit.log"
M="sm__ctas_launched.min,sm__ctas_launched.max,sm__ctas_launched.avg,sm__cycles_active.min,sm__cycles_active.max"
M="$M,sm__cycles_active.avg,gpc__cycles_elapsed.max,launch__cluster_max_active"
for shape in "11008 4096" "4096 22016" "5120 7680" "6912 5120"; do
  set -- $shape
  timeout 60 ncu --clock-control none --kernel-name regex:awq_wgmma_t --launch-skip 4 --launch-count 1 --metrics "$M" \
    python ncu_gemm.py --k "$1" --n "$2" --m 1 2>&1 | grep -E "sm__|gpc__|launch__|rel err" | sed "s/^ */$1x$2: /"
done | tee "$OUT/placement.log"
