"""Offline throughput (vLLM's benchmark_throughput): many requests at once.

    python benchmarks/throughput.py --model llama-2-7b --quantization awq --num-prompts 1000 --input-len 512 --output-len 128
    python benchmarks/throughput.py --dataset prompts.jsonl ...   # one {"prompt": ...} per line (needs a tokenizer)
    python benchmarks/throughput.py --prefill-decode-table ...     # prefill/decode tokens/s and peak VRAM, batch 1/8, len 64/2048
"""
from __future__ import annotations

import argparse
import json
import random

import torch
from common import add_model_args, device_name, make_llm, now, random_prompts

from pagedawq import SamplingParams
from pagedawq.kernels.jit_compiles import JitCompiles


def run_throughput(llm, args) -> None:
    vocab = llm.llm_engine.config.model.vocab_size
    rng = random.Random(args.seed)
    if args.dataset:
        with open(args.dataset) as f:
            prompts = [json.loads(line)["prompt"] for line in f if line.strip()][: args.num_prompts]
        outs = [args.output_len] * len(prompts)
    else:
        lo = 1 - args.random_range_ratio
        ins = [max(1, int(args.input_len * rng.uniform(lo, 1 + args.random_range_ratio))) for _ in range(args.num_prompts)]
        outs = [max(1, int(args.output_len * rng.uniform(lo, 1 + args.random_range_ratio))) for _ in range(args.num_prompts)]
        prompts = random_prompts(args.num_prompts, args.input_len, vocab, seed=args.seed, lengths=ins)
    params = [SamplingParams(temperature=1.0, top_p=1.0, max_tokens=o, ignore_eos=True, seed=i) for i, o in enumerate(outs)]
    llm.generate(prompts[: min(8, len(prompts))], params[:8], use_tqdm=False)   # warm-up (compilation)
    with JitCompiles() as compiled:
        start = now()
        results = llm.generate(prompts, params, use_tqdm=True)
        elapsed = now() - start
    n_in = sum(len(r.prompt_token_ids) for r in results)
    n_out = sum(len(r.outputs[0].token_ids) for r in results)
    print(f"device: {device_name()}  model: {args.model}  quantization: {args.quantization}  "
          f"tp: {args.tensor_parallel_size}  eager: {args.enforce_eager}")
    print(f"Throughput: {len(results) / elapsed:.2f} requests/s, {(n_in + n_out) / elapsed:.1f} total tokens/s, "
          f"{n_out / elapsed:.1f} output tokens/s ({len(results)} prompts, {n_in} in / {n_out} out tokens, "
          f"{elapsed:.1f} s)")
    if args.tensor_parallel_size == 1:   # the ranks of TP > 1 compile in other processes
        print(f"kernels compiled during the timed run: {len(compiled.kernels)} {sorted(set(compiled.kernels))}")


def prefill_decode_table(llm, args) -> None:
    """Per (batch, prompt len, decode len): prefill tokens/s (until every prompt has its first
    token), decode tokens/s (the remaining tokens) and peak GPU memory."""
    engine = llm.llm_engine
    vocab = engine.config.model.vocab_size
    print(f"device: {device_name()}  model: {args.model}  quantization: {args.quantization}  eager: {args.enforce_eager}")
    print(f"{'batch':>5} {'prefill':>7} {'decode':>6} {'prefill tok/s':>14} {'decode tok/s':>13} {'peak VRAM GiB':>14}")
    for batch in (1, 8):
        for length in (64, 2048):
            for rep in range(2):   # the first repetition warms up kernels for this shape
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                prompts = random_prompts(batch, length, vocab, seed=rep + 7)
                params = SamplingParams(temperature=0, max_tokens=length, ignore_eos=True)
                for i, p in enumerate(prompts):
                    engine.add_request(f"pd{batch}-{length}-{rep}-{i}", p, params)
                # Prefill ends when every request has its first token: with asynchronous
                # scheduling the first step() only launches it and returns.
                t0 = now()
                first: set[str] = set()
                while len(first) < batch:
                    first.update(o.request_id for o in engine.step() if o.outputs[0].token_ids)
                t1 = now()
                while engine.has_unfinished_requests():
                    engine.step()
                t2 = now()
            peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
            print(f"{batch:>5} {length:>7} {length:>6} {batch * length / (t1 - t0):>14.0f} "
                  f"{batch * (length - 1) / (t2 - t1):>13.1f} {peak:>14.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    add_model_args(p)
    p.add_argument("--num-prompts", type=int, default=1000)
    p.add_argument("--input-len", type=int, default=512)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--random-range-ratio", type=float, default=0.0)
    p.add_argument("--dataset", default=None)
    p.add_argument("--prefill-decode-table", action="store_true")
    args = p.parse_args()
    if args.prefill_decode_table:
        llm = make_llm(args, enable_prefix_caching=False, max_num_batched_tokens=max(args.max_num_batched_tokens or 0, 8 * 2048),
                       max_model_len=args.max_model_len or 4096)
        prefill_decode_table(llm, args)
    else:
        llm = make_llm(args)
        run_throughput(llm, args)
    llm.close()


if __name__ == "__main__":
    main()
