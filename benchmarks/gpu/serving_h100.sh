#!/usr/bin/env bash
# The serving sweep of issue 8 on one H100 (Llama-2-7B shape, AWQ, dummy weights; fresh prompts per
# configuration). carry: [".whl_serve", ".gpucarry"]; about 4 minutes.
source benchmarks/gpu/env.sh
python3 -m pip install -q --no-index --find-links .whl_serve fastapi uvicorn httpx
cd benchmarks
SHAPE=$(python -c "from common import shape_dir; print(shape_dir('llama-2-7b'))")
# The server needs a tokenizer; the default model's (49k ids) covers the random prompt ids.
cp ../.gpucarry/tokenizer.json "$SHAPE/"
timeout 200 python serving.py --launch-server --server-args "$SHAPE --load-format dummy --quantization awq --dtype float16 --max-model-len 2048" \
  --num-prompts 64 --input-len 512 --output-len 128 --max-concurrency 1 8 32 64 --result-file "$OUT/serving.json" > "$OUT/serving.log" 2>&1
tail -7 "$OUT/serving.log"
