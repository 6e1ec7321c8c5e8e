"""Where a decode step (batch 1 unless ``--batch``) spends its time: wall clock against GPU kernel time, per rank.

For each configuration: the decode step at the engine's steady pace without the profiler
(``common.decode_timing``), then a generation under
``LLM.start_profile()``: the sum of kernel times per token on every rank (the rest of the wall time
is the GPU waiting for the host: scheduling, input preparation, sampling, the driver/worker hop)
and rank 0's top kernels.

With ``--breakdown`` it also replays (on every rank at once) the decode graph of that batch by itself: its GPU
time, and the host time of the replay call, against the engine's whole step (the steadiest measure
of a kernel change in decode: two runs agree within ~0.5%, where e2e tok/s moves by up to 20%).

    python benchmarks/decode_profile.py --model llama-2-13b --quantization awq --tp 1 2
    python benchmarks/decode_profile.py --model llama-2-70b --quantization awq --tp 2 4 --no-table   # issue 7

For TP > 1 it also prints rank 0's communication-kernel share of its kernel time.
"""
from __future__ import annotations

import argparse
import gc
import os

import torch
from common import decode_timing, device_name, random_prompts, shape_dir

import pagedawq
from pagedawq import LLM, SamplingParams

# Kernel-name fragments of collective communication (NCCL, and the symmetric-memory all-reduce).
COMM_KERNELS = ("allreduce", "all_reduce", "allgather", "all_gather", "one_shot")
# The all-reduce fused with the residual add + RMSNorm: communication and a norm in one kernel,
# reported on its own line so that the share of pure communication stays comparable between runs.
FUSED_COMM_KERNELS = ("add_rms_norm",)


def graph_breakdown(llm: LLM, wall_us: float, batch: int) -> None:
    """GPU time of the decode graph of ``batch`` sequences alone on every rank (its static inputs as
    the last step left them), and the host time of the replay call, against the engine's whole step."""
    for r in llm.llm_engine.time_decode_graph(batch):
        print(f"  batch-{batch} graph alone (rank {r['rank']}): {r['gpu_us']:.0f} us GPU per replay (back to back); "
              f"replay() call returns after {r['host_us']:.0f} us of host time; the engine's step: {wall_us:.0f} us "
              f"({wall_us - r['gpu_us']:.0f} us beyond the graph)", flush=True)


def profile(model: str, quant: str | None, dtype: str, tp: int, n_out: int, table: bool, breakdown: bool,
            batch: int, trace_dir: str | None = None, backend: str | None = None) -> None:
    llm = LLM(shape_dir(model), load_format="dummy", skip_tokenizer_init=True, dtype=dtype, quantization=quant,
              tensor_parallel_size=tp, max_model_len=2048, max_num_seqs=max(8, batch),
              distributed_executor_backend=backend if tp > 1 else None)
    vocab = llm.llm_engine.config.model.vocab_size
    params = SamplingParams(temperature=0, max_tokens=n_out, ignore_eos=True)
    wall_us = 1e6 * decode_timing(llm, batch, 32, n_out).step   # a decode step; prefill and the call's ends apart
    if breakdown:
        graph_breakdown(llm, wall_us, batch)   # before the profiler: once it has run, graph launches block
    llm.start_profile()
    llm.generate(random_prompts(batch, 32, vocab, seed=4), params, use_tqdm=False)
    ranks = llm.stop_profile(os.path.join(trace_dir, f"tp{tp}") if trace_dir else None)
    label = f"{model} {quant or dtype} TP={tp} batch {batch}"
    kernel = [r["device_time_us"] / n_out for r in ranks]
    print(f"{label}: {wall_us:.0f} us/token wall; kernel time per token by rank: "
          + ", ".join(f"{k:.0f}" for k in kernel) + f" us ({100 * max(kernel) / wall_us:.0f}% of wall)", flush=True)
    by_kernel = ranks[0]["kernel_time_us"]
    if tp > 1:
        def share(names: list[str]) -> float:
            return sum(by_kernel[n] for n in names) / n_out
        comm = [n for n in by_kernel if any(w in n.lower() for w in COMM_KERNELS)]
        fused = [n for n in comm if any(w in n.lower() for w in FUSED_COMM_KERNELS)]
        total = share(comm)
        print(f"  rank 0: all-reduce/all-gather kernels {total:.0f} us/token = {100 * total / max(kernel[0], 1e-9):.0f}% "
              f"of its kernel time (waits for the other ranks included; of it {share(fused):.0f} us in the "
              f"all-reduce fused with the residual add + RMSNorm)", flush=True)
    top = list(by_kernel.items())[:8]
    print("  rank 0 top kernels (us/token): " + "; ".join(f"{n[:40]} {t / n_out:.0f}" for n, t in top), flush=True)
    if table:
        print(ranks[0]["table"], flush=True)
    llm.close()
    gc.collect()
    torch.cuda.empty_cache()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="llama-2-13b")
    p.add_argument("--quantization", default="awq")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--tp", type=int, nargs="+", default=[1])
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--no-table", action="store_true")
    p.add_argument("--breakdown", action="store_true", help="time the decode graph by itself too (every rank)")
    p.add_argument("--batch", type=int, default=1, help="sequences decoded together (a captured graph size)")
    p.add_argument("--trace-dir", default=None, help="write each rank's Chrome trace to DIR/tp<N>/rank<R>.json")
    p.add_argument("--backend", choices=["ray", "mp"], default=None,
                   help="the tensor-parallel executor (default: the engine's, Ray)")
    args = p.parse_args()
    print(f"device: {device_name()} x{torch.cuda.device_count()}  torch {torch.__version__}", flush=True)
    # which tree's engine this run measures (an A/B script checks it is the tree it meant)
    print(f"package: {os.path.dirname(os.path.dirname(os.path.realpath(pagedawq.__file__)))}", flush=True)
    quant = None if args.quantization in ("none", "") else args.quantization
    for tp in args.tp:
        profile(args.model, quant, args.dtype, tp, args.output_len, not args.no_table, args.breakdown, args.batch,
                args.trace_dir, args.backend)


if __name__ == "__main__":
    main()
