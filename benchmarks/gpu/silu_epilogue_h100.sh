#!/usr/bin/env bash
# Branch silu_epilogue (written in session 7 without a GPU): the Llama MLP's SiLU-and-multiply in the
# epilogue of the Hopper "wgmma_t" gate_up GEMM (one launch instead of two; weights' channels ordered
# at load time, awq_wgmma_t.silu_channel_order). One call on nvidia-h100-x1:
# 1. GPU tests: every config of the fused epilogue against float64, the fused entry point in a CUDA
#    graph and past the path's M range, and the engine against transformers.
# 2. kernels.py --silu-epilogue: gate_up + silu_and_mul vs fused, 7B / 13B-TP2 / 70B-TP8 layers.
# 3. 7B decode, fp16 and AWQ (compare AWQ / fp16 with RESULTS.md "Session 7": 2.44-2.53x at batch 1).
# carry: none; about 6 minutes. Merge into main if 1 passes and 2-3 do not lose.
source benchmarks/gpu/env.sh
timeout 240 python -m pytest -q -rf --tb=short tests/test_awq_wgmma_t.py tests/test_gpu_engine.py > "$OUT/tests.log" 2>&1
grep -E "passed|failed|^E  |^\(" "$OUT/tests.log" | head -30
cd benchmarks
timeout 120 python kernels.py --silu-epilogue > "$OUT/silu_epilogue.log" 2>&1
grep -vE "Warn|^\s*$" "$OUT/silu_epilogue.log" | tail -20
timeout 120 python e2e_suite.py --sections decode > "$OUT/e2e.log" 2>&1
grep -E "^decode|^prefill|failed|^device" "$OUT/e2e.log"
