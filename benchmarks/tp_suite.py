"""Tensor parallelism on real GPUs in one process: correctness and speed, TP=1 against TP=2.

* a random-weight GQA model (float32): greedy tokens at TP=2 equal TP=1;
* a Llama-2-13B-shaped AWQ model (random weights): decode latency at batch 1 (and the batch-1 decode
  graph replayed alone on every rank: the step's device time without the host) and offline throughput;
* with ``--compare-allreduce``, TP latency again with every all-reduce on NCCL (no symmetric memory).

    python benchmarks/tp_suite.py --tp 2 --num-prompts 1000 --compare-allreduce [--no-async-scheduling]
    python benchmarks/tp_suite.py --model llama-2-70b --tp 4 --sizes 2 4   # issue 7
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import decode_timing, device_name, now, random_prompts, shape_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pagedawq import LLM, SamplingParams  # noqa: E402
from pagedawq.kernels.jit_compiles import JitCompiles  # noqa: E402
from tests.conftest import make_rtn_awq_checkpoint, make_tiny_model  # noqa: E402


def log(msg: str) -> None:
    print(msg, flush=True)


def close(llm: LLM) -> None:
    llm.close()
    gc.collect()
    torch.cuda.empty_cache()


def correctness(tp: int, backend: str | None = None) -> None:
    """Greedy tokens at TP = ``tp`` against TP=1: a random GQA model in float32, and its int4 (RTN,
    group 64) copy in float16, which runs the GPU's AWQ kernels on each rank's shards (down's K of
    4096 / tp splits, so its split-K partials go to the norm: ``pagedawq.kernels.split_k``)."""
    path = make_tiny_model(Path(tempfile.mkdtemp()) / "gqa", "llama", hidden_size=256, intermediate_size=4096,
                           num_attention_heads=4, num_key_value_heads=2)
    awq_path, _ = make_rtn_awq_checkpoint(path, Path(tempfile.mkdtemp()) / "gqa_awq", 64)
    prompts = [{"prompt_token_ids": list(range(5 + i, 5 + i + n))} for i, n in enumerate((3, 40, 150, 17))]
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    for label, model, dtype in (("fp32", path, "float32"), ("AWQ g64 fp16", awq_path, "float16")):
        outs = {}
        for size in (1, tp):
            # TP=1 also returns its top two logprobs a token (greedy all the same), to tell a near-tie
            # where the sizes part; TP > 1 keeps the gather-free greedy path (no logprobs).
            sp = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True, logprobs=2 if size == 1 else None)
            llm = LLM(str(model), dtype=dtype, tensor_parallel_size=size, skip_tokenizer_init=True,
                      gpu_memory_utilization=0.3, distributed_executor_backend=backend if size > 1 else None)
            outs[size] = [o.outputs[0] for o in llm.generate(prompts, sp, use_tqdm=False)]
            close(llm)
        pairs = [(a.token_ids, b.token_ids) for a, b in zip(outs[1], outs[tp])]
        same = sum(a == b for a, b in pairs)
        # where a pair first differs (fp16 sums in another order may flip a near-tie late in a sequence)
        first = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a)) for a, b in pairs]
        gaps = [top_two_gap(o.logprobs[i]) for o, i in zip(outs[1], first) if i < params.max_tokens]
        log(f"correctness: random GQA model {label}, TP={tp} greedy tokens equal TP=1 for {same}/{len(prompts)} "
            f"prompts (equal prefix lengths {first} of {params.max_tokens})"
            + (f"; TP=1's top-two logprob gap where they part: {', '.join(f'{g:.4f}' for g in gaps)}" if gaps else ""))


def top_two_gap(logprobs: dict) -> float:
    """The best token's logprob minus the runner-up's (0: a tie, which rounding may break either way)."""
    best, second = sorted((lp.logprob for lp in logprobs.values()), reverse=True)[:2]
    return best - second


def speed(model: str, tp: int, quant: str | None, num_prompts: int, nccl_only: bool = False,
          async_scheduling: bool | None = None, tune_kernels: bool = False, backend: str | None = None,
          input_lens: tuple[int, ...] = (32,)) -> None:
    if nccl_only:   # the last step of a run (the variable stays set)
        os.environ["PAGEDAWQ_DISABLE_SYMM_MEM_ALLREDUCE"] = "1"
    # said also when the caller's environment set it (sessions 33-34 read such runs as a machine's)
    nccl = tp > 1 and os.environ.get("PAGEDAWQ_DISABLE_SYMM_MEM_ALLREDUCE") == "1"
    label = f"{quant or 'fp16'} TP={tp}" + (" (NCCL all-reduce only)" if nccl else "")
    start = now()
    llm = LLM(shape_dir(model), load_format="dummy", skip_tokenizer_init=True, dtype="float16",
              quantization=quant, tensor_parallel_size=tp, max_model_len=4096, async_scheduling=async_scheduling,
              tune_kernels=tune_kernels, distributed_executor_backend=backend if tp > 1 else None)
    label += " async" if llm.llm_engine.async_scheduling else ""
    label += " tuned" if tune_kernels else ""
    vocab = llm.llm_engine.config.model.vocab_size
    cache = llm.llm_engine.config.cache
    log(f"kv cache {model} {label}: {cache.num_blocks} blocks of {cache.block_size} tokens a rank; "
        f"start-up {now() - start:.1f} s")
    for n_in in input_lens:   # vLLM's benchmark_latency default is 32 in / 128 out
        after = "" if n_in == 32 else f" after {n_in}-token prompts"
        timing = decode_timing(llm, 1, n_in, 128)   # the steady decode step; prefill apart
        ms = 1000 * timing.step
        log(f"latency  {model} {label} batch 1{after}: {ms:.3f} ms/token ({1000 / ms:.0f} tok/s), median step "
            f"{1000 * timing.median_step:.3f} ms; the generation {1000 * timing.fixed:.1f} ms beyond its decode "
            "steps (prefill, pipeline start and end)")
        # the step's device time without the host: every rank replays its batch-1 decode graph of the
        # generation's last context (its bucket) at once
        graph = llm.llm_engine.time_decode_graph(1)
        log(f"graph    {model} {label} batch 1{after} alone: " + ", ".join(
            f"rank {r['rank']} {r['gpu_us'] / 1000:.3f}" for r in graph) + " ms GPU per replay")
    if num_prompts:
        prompts = random_prompts(num_prompts, 512, vocab, seed=3)
        sp = [SamplingParams(temperature=1.0, max_tokens=128, ignore_eos=True, seed=i) for i in range(num_prompts)]
        with JitCompiles() as compiled:   # sees the kernels of TP=1 only (TP > 1 ranks are other processes)
            start = now()
            llm.generate(prompts, sp, use_tqdm=False)
            el = now() - start
        names = ", ".join(sorted(set(compiled.kernels)))
        compiles = "" if tp > 1 else f"; {len(compiled.kernels)} kernels compiled in the run" + (
            f" ({names})" if names else "")
        log(f"throughput {model} {label} {num_prompts} x 512/128: {num_prompts / el:.2f} req/s, "
            f"{num_prompts * 128 / el:.0f} output tok/s{compiles}")
    close(llm)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tp", type=int, default=2, help="the TP size of the correctness check (against TP=1)")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="TP sizes to time (default: 1 and --tp); e.g. --sizes 4 to skip a TP=1 baseline "
                        "that another call measures")
    p.add_argument("--model", default="llama-2-13b")
    p.add_argument("--num-prompts", type=int, default=300)
    p.add_argument("--skip-correctness", action="store_true", help="time only (the check ran in another call)")
    p.add_argument("--async-scheduling", default=None, action=argparse.BooleanOptionalAction,
                   help="passed to every LLM (default: the engine's choice, i.e. async on GPUs)")
    p.add_argument("--tune-kernels", action="store_true", help="passed to every LLM (GEMV tuning at start-up)")
    p.add_argument("--distributed-executor-backend", default=None, choices=["ray", "mp"],
                   help="how the TP > 1 runs start their ranks (default: Ray)")
    p.add_argument("--latency-input-lens", type=int, nargs="+", default=[32],
                   help="prompt lengths of the batch-1 latency runs (128 tokens out each; default 32, as vLLM's "
                        "benchmark_latency), each followed by its decode graph replayed alone")
    p.add_argument("--compare-allreduce", action="store_true",
                   help="also time TP latency with PAGEDAWQ_DISABLE_SYMM_MEM_ALLREDUCE=1")
    args = p.parse_args()
    # the start-up warm-up's line (kernels compiled, seconds) of TP=1, which runs in this process
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pagedawq.engine.model_runner").setLevel(logging.INFO)
    log(f"device: {device_name()} x{torch.cuda.device_count()}  torch {torch.__version__}  {time.strftime('%Y-%m-%d')}")
    backend = args.distributed_executor_backend
    steps = ([] if args.skip_correctness else [lambda: correctness(args.tp, backend)]) + [
        (lambda size=size: speed(args.model, size, "awq", args.num_prompts, async_scheduling=args.async_scheduling,
                                 tune_kernels=args.tune_kernels, backend=backend,
                                 input_lens=tuple(args.latency_input_lens)))
        for size in (args.sizes or (1, args.tp))]
    if args.compare_allreduce:
        steps.append(lambda: speed(args.model, args.tp, "awq", 0, nccl_only=True, async_scheduling=args.async_scheduling,
                                   backend=backend))
    for step in steps:
        t = time.perf_counter()
        try:
            step()
        except Exception as e:   # keep going: report what failed, measure the rest
            log(f"step failed: {type(e).__name__}: {e}")
        log(f"[{time.perf_counter() - t:.0f} s]")


if __name__ == "__main__":
    main()
