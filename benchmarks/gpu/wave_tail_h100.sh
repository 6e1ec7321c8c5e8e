#!/usr/bin/env bash
# The last part-filled wave of a large-M warp-specialised launch in a second launch of smaller
# tiles or K slices (awq_configs.ws_wave_tail, session 18): GPU tests, then awq_gemm on the layers
# it changes, this tree against .abmain (main), alternating. One GPU, ~5 minutes.
# carry: [".abmain"], built with: rm -rf .abmain && mkdir .abmain && git archive main | tar -x -C .abmain
source benchmarks/gpu/env.sh
timeout 240 python -m pytest -q -m gpu -x -rf --tb=short tests/test_awq_wgmma_t.py \
  -k "last_wave or silu_and_mul_in_a_cuda_graph or takes_the_path" > "$OUT/tests.log" 2>&1
tail -3 "$OUT/tests.log"
for t in tree1:. main1:.abmain tree2:. main2:.abmain; do
  (cd "${t#*:}/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 100 python kernels.py --wgmma-t \
     --wgmma-t-models llama2-7b --wgmma-t-layers gate_up qkv --ms 1024 2048 > "$OUT/kernels_${t%%:*}.log" 2>&1)
  grep -E "^llama|rror" "$OUT/kernels_${t%%:*}.log" | sed "s/^/${t%%:*} /"
  (cd "${t#*:}/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 100 python gemm_residency.py \
     --ms 960 1024 4096 --shapes 13824,5120 5120,13824 > "$OUT/residency_${t%%:*}.log" 2>&1)
  grep -E "^[0-9]|rror" "$OUT/residency_${t%%:*}.log" | sed "s/^/${t%%:*} /"
done
