#!/usr/bin/env bash
# Batch-1 attention's split count (issue 6, session 22 "Next"), in one call: the attention tests on
# the GPU, attention.py's decode sweep (13B at TP=2 / TP=1, 128-token context: 1 split against 2, 4
# and the decode graphs' 27 / 14), then the 13B step and graph at TP=1 and TP=2 of this tree and of
# two variants:
# - splits1: the decode graphs take their split count from 128 tokens instead of max_model_len
#   (1 split, no reduce kernel). An experiment, not a product: one split is slow at 4096 tokens.
# - buckets: patches/decode_graphs_by_context.patch, the product form. Batches of up to 8 also
#   get decode graphs bounded by 256 tokens (2 splits at batch 1 here), replayed while the
#   contexts fit.
# carry: [".raycarry"]; ~8-9 minutes.
source benchmarks/gpu/env.sh
timeout 150 python -m pytest -q tests/test_attention_kernels.py tests/test_cuda_graphs.py > "$OUT/attn_tests.log" 2>&1
tail -1 "$OUT/attn_tests.log"; grep "^FAILED" "$OUT/attn_tests.log"
(cd benchmarks && timeout 120 python attention.py --sections decode --sweep > "$OUT/attention_decode.log" 2>&1)
grep -E "device|copy|ctx=128" "$OUT/attention_decode.log" | cut -c1-220
TP_TIMEOUT=140 SIZES="1 2" RUNS=1 VARIANTS="splits1|pagedawq/attention/triton_backend.py|s/kv_cache.shape\\[3\\], self.max_model_len)/kv_cache.shape[3], 128)/
buckets|pagedawq/engine/cuda_graphs.py|patch:benchmarks/gpu/patches/decode_graphs_by_context.patch" \
  bash benchmarks/gpu/tp2_variants_x2.sh
