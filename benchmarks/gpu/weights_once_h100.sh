#!/usr/bin/env bash
# Session 34: AWQ weights held once on Hopper (the checkpoint tensors freed after the load-time
# repack; before, they stayed beside the copy and a 70B AWQ model ran out of memory at TP=1 on one
# 80 GB H100). nvidia-h100-x1, nothing to carry, ~7 minutes:
# 1. the GPU tests of the change: the engine's AWQ runs against the dequantized reference, the
#    layers' tensors (meta) after loading, awq_gemm and the silu epilogue with repacked weights;
#    since its session-34 run also the up-front refusal of weights that do not fit, and the
#    profiling forward's attention on SDPA's fused kernels (fp32, fp16);
# 2. the 70B AWQ at TP=1 (did not load before): the worker's memory line (weights, peak
#    activations: 10.4 GiB in session 34 before the profiling-forward fix; KV cache), batch-1
#    latency and 1000 x 512/128 throughput;
# 3. the 13B at TP=1, batch 1 (3.212 ms/token on an H100 before the change, session 34 call 1).
set -u
source benchmarks/gpu/env.sh
timeout 300 python -m pytest -q \
  "tests/test_gpu_engine.py::test_awq_gpu_kernels_track_dequantized_reference" \
  "tests/test_gpu_engine.py::test_awq_weights_are_held_once_on_hopper" \
  "tests/test_awq_wgmma_t.py::test_gpu_awq_gemm_takes_the_path_with_repacked_weights_and_in_a_cuda_graph" \
  "tests/test_awq_wgmma_t.py::test_gpu_awq_gemm_silu_and_mul_in_a_cuda_graph_warp_specialised_and_unfused" \
  "tests/test_gpu_engine.py::test_weights_that_do_not_fit_the_gpu_are_refused_before_loading" \
  "tests/test_attention_kernels.py::test_profile_forward_attention_runs_a_fused_sdpa_kernel_and_matches_float64" \
  > "$OUT/tests.log" 2>&1
tail -3 "$OUT/tests.log"
cd benchmarks
# tp_suite.py with the engine's INFO log, for the worker's memory line
timeout 330 python -c "import logging, runpy, sys; logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s'); \
sys.argv = ['tp_suite.py'] + sys.argv[1:]; runpy.run_path('tp_suite.py', run_name='__main__')" \
  --model llama-2-70b --sizes 1 --skip-correctness --num-prompts 1000 > "$OUT/tp1_70b.log" 2>&1
grep -E "GPU memory|^kv cache|^latency|^graph|^throughput|failed|Error" "$OUT/tp1_70b.log" | cut -c1-220
timeout 90 python tp_suite.py --sizes 1 --skip-correctness --num-prompts 0 > "$OUT/tp1_13b.log" 2>&1
grep -E "^latency|^graph|failed|Error" "$OUT/tp1_13b.log" | cut -c1-150
