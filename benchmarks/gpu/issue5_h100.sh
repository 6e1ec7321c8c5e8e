#!/usr/bin/env bash
# Issue 5 on one H100, one call: the e2e suite (decode batch 1/16/64, prefill 2048, throughput
# 1000 x 512/128, fp16 vs AWQ, and transformers' generate as the baseline, all in this run), then
# the seed documents' table (prefill/decode tok/s and peak VRAM, batch 1/8, lengths 64/2048) for
# fp16 and AWQ. carry: none; about 8 minutes.
source benchmarks/gpu/env.sh
cd benchmarks
timeout 330 python e2e_suite.py --sections decode throughput transformers --num-prompts 1000 \
  --out "$OUT/e2e.json" > "$OUT/e2e.log" 2>&1
grep -v "it/s\]" "$OUT/e2e.log" | tail -16
for q in "" "--quantization awq"; do
  timeout 110 python throughput.py --model llama-2-7b --load-format dummy --dtype float16 $q --prefill-decode-table \
    >> "$OUT/seed_table.log" 2>&1
done
grep -v "it/s\]" "$OUT/seed_table.log" | tail -14
