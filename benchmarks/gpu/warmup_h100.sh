#!/usr/bin/env bash
# Session 36: the start-up warm-up that compiles every kernel variant a batch can launch
# (pagedawq/engine/warmup.py); first run in session 37 (RESULTS.md "Session 37"). Session 36 found that a 1000-prompt run on a
# fresh machine compiled kernels inside the timed region: 13B AWQ TP=1 on 2×H200 gave 16.2-16.9
# req/s with a cold Triton cache and 19.5-20.1 with a warm one (RESULTS.md "Session 36").
# nvidia-h100-x1 (any Hopper), carry [".abmain"] (main before the warm-up: `git archive ce8612e`).
# STEP=check (~5-9 minutes): the warm-up's tests (CPU ones and the GPU test that a mixed workload
#   compiles nothing after start-up, AWQ and fp16), then the rest of the engine's GPU tests.
# STEP=ab (~9 minutes): the 13B AWQ at TP=1 with 1000 x 512/128, each tree with an empty Triton cache
#   (a fresh machine: start-up time, the warm-up line, throughput and the kernels compiled in the
#   timed run) and then again with that cache filled (steady state), .abmain first.
set -u
source benchmarks/gpu/env.sh
root=$PWD
if [ "${STEP:-check}" = check ]; then
  timeout 180 python -m pytest -q -x tests/test_warmup.py \
    "tests/test_gpu_engine.py::test_requests_compile_no_kernel_after_start_up" > "$OUT/warmup_tests.log" 2>&1
  tail -1 "$OUT/warmup_tests.log"
  grep -E "^E " "$OUT/warmup_tests.log" | head -40 | cut -c1-400   # what still compiles in requests
  timeout 380 python -m pytest -q tests/test_gpu_engine.py tests/test_cuda_graphs.py > "$OUT/engine_tests.log" 2>&1
  tail -3 "$OUT/engine_tests.log"
else
  for cache in cold warm; do
    tree_suite main "$root/.abmain" 240 "thr_main_$cache" --sizes 1 --skip-correctness --num-prompts 1000
    tree_suite warmup "$root" 300 "thr_warmup_$cache" --sizes 1 --skip-correctness --num-prompts 1000
  done
fi
