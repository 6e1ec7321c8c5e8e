"""Decode throughput of pagedawq against transformers' ``generate`` on the same shapes, same run.

    python benchmarks/vs_transformers.py --model smollm2-135m-instruct --device cpu --batch-sizes 1 32
    python benchmarks/vs_transformers.py --model llama-2-7b --device cuda --dtype float16 --batch-sizes 1 64

A shape name (see common.SHAPES) uses random weights on both sides; a path or the default model's
name loads real weights on both sides.
"""
from __future__ import annotations

import argparse

import torch
from common import SHAPES, device_name, now, random_prompts, shape_dir

from pagedawq import LLM, SamplingParams


def hf_model(args, path: str, dtype: torch.dtype, device: str):
    import transformers
    if args.model in SHAPES:
        config = transformers.AutoConfig.from_pretrained(path)
        with torch.device(device):
            return transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    from pagedawq.config import resolve_model_path
    return transformers.AutoModelForCausalLM.from_pretrained(resolve_model_path(path), dtype=dtype).to(device).eval()


def time_ours(llm: LLM, prompts, n_out: int) -> float:
    params = SamplingParams(temperature=0, max_tokens=n_out, ignore_eos=True)
    llm.generate(prompts, params, use_tqdm=False)   # warm-up
    start = now()
    llm.generate(prompts, params, use_tqdm=False)
    return now() - start


@torch.inference_mode()
def time_hf(model, prompts, n_out: int, device: str) -> float:
    ids = torch.tensor([p["prompt_token_ids"] for p in prompts], device=device)
    kw = dict(max_new_tokens=n_out, min_new_tokens=n_out, do_sample=False, pad_token_id=0)
    model.generate(ids[:, :8], **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})   # warm-up
    start = now()
    model.generate(ids, **kw)
    return now() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--quantization", default=None)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--input-len", type=int, default=32)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--skip-transformers", action="store_true")
    args = p.parse_args()
    path = shape_dir(args.model)
    dummy = args.model in SHAPES
    llm = LLM(path, device=args.device, dtype=args.dtype, quantization=args.quantization,
              load_format="dummy" if dummy else "auto", skip_tokenizer_init=dummy,
              max_model_len=max(512, args.input_len + args.output_len), max_num_seqs=max(args.batch_sizes))
    cfg = llm.llm_engine.config
    device, dtype = cfg.device, cfg.model.dtype
    rows = []
    for bs in args.batch_sizes:
        prompts = random_prompts(bs, args.input_len, cfg.model.vocab_size, seed=bs)
        rows.append([bs, bs * args.output_len / time_ours(llm, prompts, args.output_len)])
    llm.close()
    if not args.skip_transformers:
        model = hf_model(args, path, dtype, device)
        for row in rows:
            prompts = random_prompts(row[0], args.input_len, cfg.model.vocab_size, seed=row[0])
            row.append(row[0] * args.output_len / time_hf(model, prompts, args.output_len, device))
    print(f"device: {device_name()}  model: {args.model} ({'random' if dummy else 'real'} weights)  dtype: {dtype}  "
          f"quantization: {args.quantization}  input {args.input_len}, output {args.output_len} tokens, greedy")
    print(f"{'batch':>5} {'pagedawq tok/s':>15} {'transformers tok/s':>19} {'ratio':>6}")
    for row in rows:
        hf = row[2] if len(row) > 2 else float("nan")
        print(f"{row[0]:>5} {row[1]:>15.1f} {hf:>19.1f} {row[1] / hf:>6.2f}")


if __name__ == "__main__":
    main()
