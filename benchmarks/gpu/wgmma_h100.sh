#!/usr/bin/env bash
# Issues 4/5, one H100: the Hopper "wgmma" AWQ GEMM path (pagedawq/kernels/awq_wgmma.py).
# 1. GPU tests: every config against float64 (odd M, groups 64/128), default choice, CUDA graph;
#    and the AWQ kernel tests of the other paths.
# 2. kernels.py --wgmma: each config and the default choice at M = 64-1024 against cuBLAS and the
#    path taken without it, on the Llama-2-7B layers and the 13B/TP=2 gate_up.
# 3. The issue-5 e2e rows (decode 1/16/64, prefill 2048, throughput 1000 x 512/128; fp16 and AWQ)
#    and the AWQ rows again without the wgmma path, same run.
# carry: none; about 7 minutes.
source benchmarks/gpu/env.sh
timeout 150 python -m pytest -q tests/test_awq_wgmma.py tests/test_awq_gemm.py -k "gpu or wgmma or choice or compiles" \
  > "$OUT/wgmma_tests.log" 2>&1
tail -3 "$OUT/wgmma_tests.log"
cd benchmarks
timeout 200 python kernels.py --wgmma > "$OUT/wgmma_sweep.log" 2>&1
grep -v Warn "$OUT/wgmma_sweep.log" | tail -40
timeout 230 python e2e_suite.py --sections decode throughput nowgmma --num-prompts 1000 --out "$OUT/e2e.json" \
  > "$OUT/e2e.log" 2>&1
grep -v "it/s\]" "$OUT/e2e.log" | tail -20
