#!/usr/bin/env bash
# Session 42: issue 4's table (kernels.py: fp16 cuBLAS and awq_gemm on the Llama-2-7B, Llama-3-8B and
# Llama-2-70B/TP8 layers at M = 1-4096) with each call timed as the marginal call of back-to-back graphs
# (kernels.graph_time_us since session 42) and cuBLAS and AWQ timed in turn 3 times a cell (medians); then
# experiments/small_m_stream_probe.py --calls (per call against graph length, both kernels), the check of that
# method on this machine.
# nvidia-h100-x1, ~5 minutes on a fresh machine (CALLS=0: the table only; MODELS=...: those models' rows).
source benchmarks/gpu/env.sh
(cd benchmarks && timeout ${LIMIT:-540} python kernels.py --models ${MODELS:-llama2-7b llama3-8b llama2-70b-tp8} --out-dir "$OUT") \
  > "$OUT/kernels_table.log" 2>&1
tail -n 150 "$OUT/kernels_table.log" | grep -E "^(model|llama)" | tail -n 145
if [ "${CALLS:-1}" = 1 ]; then
  timeout 100 python benchmarks/experiments/small_m_stream_probe.py --calls --ms 1 16 --rounds 2 2>&1 | tee "$OUT/small_m_calls.log"
fi
