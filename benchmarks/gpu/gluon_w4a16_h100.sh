#!/usr/bin/env bash
# Issues 4/5 experiment: the Gluon AWQ GEMM whose unpack overlaps the wgmma
# (benchmarks/experiments/gluon_w4a16.py): correctness, then time at M = 64-512 on the Llama-2-7B
# layers against cuBLAS fp16 and awq_gemm, and at M = 1024 and 4096 against the dequant path (issue 4's
# large-M target), one H100. carry: none; about 6 minutes.
source benchmarks/gpu/env.sh
timeout 500 python benchmarks/experiments/gluon_w4a16.py > "$OUT/gluon_w4a16.log" 2>&1
grep -v Warn "$OUT/gluon_w4a16.log" | tail -30
