#!/usr/bin/env bash
# Batch-1 attention's split count (issue 6, session 22 "Next"), in one call: the attention tests on
# the GPU, attention.py's decode sweep (13B at TP=2 / TP=1, 128-token context: 1 split against 2, 4
# and the decode graphs' 27 / 14), then the 13B step and graph at TP=1 and TP=2 of this tree and of
# two variants whose decode graphs take their split count from 128 and 256 tokens instead of
# max_model_len (1 and 2 splits). The variants are experiments, not products: one split is slow
# at 4096 tokens. carry: [".raycarry"]; ~9 minutes.
source benchmarks/gpu/env.sh
timeout 150 python -m pytest -q tests/test_attention_kernels.py > "$OUT/attn_tests.log" 2>&1
tail -1 "$OUT/attn_tests.log"; grep "^FAILED" "$OUT/attn_tests.log"
(cd benchmarks && timeout 150 python attention.py --sections decode --sweep > "$OUT/attention_decode.log" 2>&1)
grep -E "device|copy|ctx=128" "$OUT/attention_decode.log" | cut -c1-220
split_from() { echo "splits$1|pagedawq/attention/triton_backend.py|s/kv_cache.shape\\[3\\], self.max_model_len)/kv_cache.shape[3], $2)/"; }
SIZES="1 2" RUNS=1 VARIANTS="$(split_from 1 128)
$(split_from 2 256)" bash benchmarks/gpu/tp2_variants_x2.sh
