#!/usr/bin/env bash
# Issues 6 and 7: the AWQ GEMV on the per-rank layers of the tensor-parallel runs (Llama-2-70B at
# TP=4 and 2, Llama-2-13B at TP=2), default config vs a small sweep, next to cuBLAS; the winners are
# printed as awq_configs.GEMV_TUNED entries. One GPU (the H200 kind, as the TP runs); ~6 minutes.
source benchmarks/gpu/env.sh
cd benchmarks
timeout 560 python kernels.py --gemv --gemv-models llama2-70b-tp4 llama2-70b-tp2 llama2-13b-tp2 > "$OUT/gemv_tp.log" 2>&1   # also writes $OUT/gemv_sweep.csv
grep -vE "^\s*$" "$OUT/gemv_tp.log" | tail -60
