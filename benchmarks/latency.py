"""Latency of one batch end to end (vLLM's benchmark_latency): time per request and per output token.

    python benchmarks/latency.py --model llama-2-7b --quantization awq --batch-size 1 --input-len 128 --output-len 128
"""
from __future__ import annotations

import argparse
import statistics

from common import add_model_args, device_name, make_llm, now, random_prompts

from pagedawq import SamplingParams


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    add_model_args(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--input-len", type=int, default=32)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--num-iters-warmup", type=int, default=2)
    p.add_argument("--num-iters", type=int, default=5)
    args = p.parse_args()
    llm = make_llm(args, enable_prefix_caching=False)
    vocab = llm.llm_engine.config.model.vocab_size
    params = SamplingParams(temperature=0, max_tokens=args.output_len, ignore_eos=True)
    prompts = random_prompts(args.batch_size, args.input_len, vocab)
    for _ in range(args.num_iters_warmup):
        llm.generate(prompts, params, use_tqdm=False)
    times = []
    for i in range(args.num_iters):
        start = now()
        llm.generate(random_prompts(args.batch_size, args.input_len, vocab, seed=i + 1), params, use_tqdm=False)
        times.append(now() - start)
    med = statistics.median(times)
    print(f"device: {device_name()}  model: {args.model}  quantization: {args.quantization}  "
          f"dtype: {llm.llm_engine.config.model.dtype}  eager: {args.enforce_eager}")
    print(f"batch {args.batch_size}, input {args.input_len}, output {args.output_len}: median latency {med:.3f} s "
          f"over {args.num_iters} runs; {1000 * med / args.output_len:.2f} ms per output token; "
          f"{args.batch_size * args.output_len / med:.1f} output tokens/s")
    llm.close()


if __name__ == "__main__":
    main()
