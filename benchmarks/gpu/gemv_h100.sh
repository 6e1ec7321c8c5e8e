#!/usr/bin/env bash
# Issues 4-7, one H100: what session 4 prepared offline.
# 1. GPU tests: the GEMV path at full shapes, the attention kernels (rotary now inside the cache write) and the engine
#    (Triton path = torch path, graphs = eager, AWQ; q/k/v now strided views of the QKV output).
# 2. The GEMV sweep on the Llama-2-7B and 13B/TP=2 layers next to cuBLAS.
# 3. Llama-2-7B AWQ batch-1 latency, default configs vs --tune-kernels, alternated twice (the first
#    tuned run tunes and caches).
# carry: none; about 8 minutes.
source benchmarks/gpu/env.sh
timeout 240 python -m pytest -q tests/test_awq_gemm.py tests/test_gpu_engine.py tests/test_attention_kernels.py \
  -k "gemv or gpu_engine or attention_kernels" > "$OUT/gemv_tests.log" 2>&1
tail -3 "$OUT/gemv_tests.log"
cd benchmarks
timeout 240 python kernels.py --gemv --gemv-models llama2-7b llama2-13b-tp2 > "$OUT/gemv_sweep.log" 2>&1
grep -vE "^\s*$" "$OUT/gemv_sweep.log" | tail -40
for round in 1 2; do
  for tune in "" "--tune-kernels"; do
    echo "== round $round ${tune:-default}" >> "$OUT/latency_ab.log"
    timeout 100 python latency.py --model llama-2-7b --quantization awq --batch-size 1 --input-len 32 \
      --output-len 128 --num-iters 3 --num-iters-warmup 1 --max-num-seqs 1 --max-model-len 512 $tune \
      >> "$OUT/latency_ab.log" 2>&1
  done
done
grep -E "^==|median latency|Traceback|Error" "$OUT/latency_ab.log"
