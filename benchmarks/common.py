"""Shared pieces of the benchmarks: model shapes without weights, random prompts, timing."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Real model shapes (weights are random: load_format="dummy").
SHAPES: dict[str, dict] = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rope_theta=10000.0),
    "llama-2-13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                        num_key_value_heads=40, vocab_size=32000, max_position_embeddings=4096, rope_theta=10000.0),
    "llama-2-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                        num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096, rope_theta=10000.0),
    "llama-3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                         tie_word_embeddings=True),
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1024, max_position_embeddings=4096, rope_theta=10000.0),
}


def shape_dir(name: str) -> str:
    """A model directory holding only config.json for a named shape (use with load_format='dummy')."""
    if name not in SHAPES:
        return name   # a real model path or the default model's name
    root = Path(os.environ.get("PAGEDAWQ_CACHE", Path.home() / ".cache" / "pagedawq")) / "shapes" / name
    root.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "rms_norm_eps": 1e-5,
           "torch_dtype": "float16", "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}
    cfg.update(SHAPES[name])
    (root / "config.json").write_text(json.dumps(cfg, indent=1))
    return str(root)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="llama-2-7b", help=f"a shape name {sorted(SHAPES)} or a model path")
    p.add_argument("--quantization", default=None, choices=[None, "awq"])
    p.add_argument("--load-format", default="dummy", choices=["auto", "dummy"])
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--distributed-executor-backend", default=None, choices=[None, "ray", "mp"])
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int, default=None)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--kv-cache-memory-bytes", type=int, default=None)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--async-scheduling", default=None, action=argparse.BooleanOptionalAction)
    p.add_argument("--tune-kernels", action="store_true")
    p.add_argument("--no-enable-prefix-caching", dest="enable_prefix_caching", action="store_false")
    p.add_argument("--seed", type=int, default=0)


def make_llm(args: argparse.Namespace, **overrides):
    from pagedawq import LLM
    kw = dict(quantization=args.quantization, load_format=args.load_format, dtype=args.dtype, device=args.device,
              tensor_parallel_size=args.tensor_parallel_size,
              distributed_executor_backend=args.distributed_executor_backend, max_model_len=args.max_model_len,
              max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
              gpu_memory_utilization=args.gpu_memory_utilization, kv_cache_memory_bytes=args.kv_cache_memory_bytes,
              enforce_eager=args.enforce_eager, enable_prefix_caching=args.enable_prefix_caching, seed=args.seed,
              async_scheduling=args.async_scheduling, tune_kernels=args.tune_kernels,
              skip_tokenizer_init=args.load_format == "dummy")
    kw.update(overrides)
    return LLM(shape_dir(args.model), **kw)


def random_prompts(n: int, length: int, vocab: int, seed: int = 0, lengths: list[int] | None = None) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    lengths = lengths or [length] * n
    return [{"prompt_token_ids": torch.randint(10, vocab - 1, (k,), generator=gen).tolist()} for k in lengths]


def sync() -> None:
    """Wait for this process's GPU work, if it has any. A tensor-parallel driver has none (its ranks
    run elsewhere), and synchronising there would create an idle CUDA context on its cuda:0 for
    nothing, which a user's driver does not hold. (Sessions 32-33: in PDL-off traces the rank on
    that GPU left 0.10 us between kernels and the other 0.42; without the driver's context both
    leave 0.42. Only traces show it: the untraced steps and graphs do not change,
    benchmarks/gpu/driver_context_x2.sh.)"""
    if torch.cuda.is_initialized() and torch.cuda.max_memory_reserved() > 0:
        torch.cuda.synchronize()


def now() -> float:
    sync()
    return time.perf_counter()


class DecodeTiming(NamedTuple):
    """``decode_timing``'s result, in seconds."""
    step: float          # host time over the middle half of the steps / their number
    fixed: float         # what the whole generation costs beyond n_out such steps
    median_step: float   # the median of the middle half's step-to-step intervals


def decode_timing(llm, batch: int, n_in: int, n_out: int) -> DecodeTiming:
    """(seconds a decode step of ``batch`` sequences takes, seconds the whole generation costs beyond
    ``n_out`` such steps, the median step) after ``n_in``-token prompts, warmed up once. The step is
    the engine's steady pace: host time over the middle half of the steps (by then each ``step()``
    returns as the device finishes the step before, with the next one already launched). The second
    number holds the prefill (time to first token) and the asynchronous pipeline's start and end: a
    difference of whole ``generate`` calls would mix these into the step (on the H100 they varied by
    tens of milliseconds a call, session 14). The median of the middle half's intervals is the
    pace without its one-off stalls: a single stall of a few ms among the 64 steps of a 128-token
    generation moves the mean by tens of µs a step (the 13B TP=1 step measured 2.78-2.85 ms on one
    machine while its graph stayed within 30 µs, session 33)."""
    from pagedawq import SamplingParams
    first, last = n_out // 4, n_out - n_out // 4
    if first < 1 or last - first < 2:
        raise ValueError(f"decode_timing needs n_out >= 4, got {n_out}")
    eng = llm.llm_engine
    vocab = eng.config.model.vocab_size
    params = SamplingParams(temperature=0, max_tokens=n_out, ignore_eos=True)
    llm.generate(random_prompts(batch, n_in, vocab, seed=1), params, use_tqdm=False)
    for i, prompt in enumerate(random_prompts(batch, n_in, vocab, seed=2)):
        eng.add_request(f"decode-timing-{batch}-{i}", prompt, params)
    marks, start = [], now()
    while eng.has_unfinished_requests():
        eng.step()
        marks.append(time.perf_counter())
    total = now() - start
    return steady_pace(marks, first, last, total, n_out)


def steady_pace(marks: list[float], first: int, last: int, total: float, n_out: int) -> DecodeTiming:
    """``decode_timing`` from the times after each step (``marks[i]``: after step i + 1) and the
    whole generation's time."""
    window = marks[first - 1:last]
    step = (window[-1] - window[0]) / (last - first)
    return DecodeTiming(step, total - n_out * step, statistics.median([b - a for a, b in zip(window, window[1:])]))


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores)"
