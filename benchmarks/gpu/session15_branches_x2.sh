#!/usr/bin/env bash
# Branch session15_gpu (single-dispatch cluster launches, prefill CUDA graphs, rotary inside the
# decode attention kernel) on 2 GPUs: its GPU tests, its TP=2 greedy tokens against TP=1, then the
# 13B AWQ batch-1 step, graph and time-to-first-token term at TP=1 and TP=2 (tp_suite.py) for this
# tree and for main (ROOT_A, default .abmain; RUNS times, default 1). carry: [".raycarry", ".abmain"];
# about 8-9 minutes.
source benchmarks/gpu/env.sh
A=${ROOT_A:-.abmain}
timeout 150 python -m pytest -q -m gpu tests/test_attention_kernels.py tests/test_gpu_engine.py -x \
  > "$OUT/tests_engine.log" 2>&1; tail -2 "$OUT/tests_engine.log"
timeout 200 python -m pytest -q -m gpu tests/test_awq_wgmma_t.py -x \
  -k "pdl_chain or in_a_cuda_graph or (every_config and 11008) or split_k_partials" > "$OUT/tests_gemm.log" 2>&1
tail -2 "$OUT/tests_gemm.log"
# this tree: TP=2 greedy tokens against TP=1 (fp32 and AWQ), then its timings; main's timings after
(cd benchmarks && timeout 240 python tp_suite.py --tp 2 --num-prompts 0 > "$OUT/tp_tree_check.log" 2>&1)
grep -E "^correct|^latency|^graph|failed" "$OUT/tp_tree_check.log" | sed "s/^/tree: /" | cut -c1-170
for r in $(seq 1 "${RUNS:-1}"); do
  (cd "$A/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 150 python tp_suite.py --tp 2 \
     --num-prompts 0 --skip-correctness > "$OUT/tp_main_run$r.log" 2>&1)
  grep -E "^latency|^graph|failed" "$OUT/tp_main_run$r.log" | sed "s/^/main run$r: /" | cut -c1-170
done
