"""``pagedawq`` console command: ``generate``, ``quantize`` (and ``serve`` when the server is installed)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Every ``LLM`` engine argument as a flag (shared by generate, serve and the benchmarks)."""
    parser.add_argument("model", nargs="?", default=None,
                        help="HF directory, .gguf file, or 'smollm2-135m-instruct' (the default)")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--quantization", default=None, choices=[None, "awq"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--max-num-batched-tokens", type=int, default=None)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--kv-cache-memory-bytes", type=int, default=None)
    parser.add_argument("--no-enable-prefix-caching", dest="enable_prefix_caching", action="store_false")
    parser.add_argument("--load-format", default="auto", choices=["auto", "safetensors", "dummy"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--distributed-executor-backend", default=None, choices=[None, "uni", "ray", "mp"])
    parser.add_argument("--async-scheduling", default=None, action=argparse.BooleanOptionalAction,
                        help="launch step n+1 before step n's tokens reach the host (default: on for GPUs)")
    parser.add_argument("--tune-kernels", action="store_true",
                        help="time the AWQ GEMV launch configurations for this model on this GPU at start-up "
                             "(cached on disk per GPU)")


ENGINE_ARG_NAMES = ("tokenizer", "quantization", "dtype", "device", "tensor_parallel_size", "max_model_len",
                    "max_num_seqs", "max_num_batched_tokens", "block_size", "gpu_memory_utilization",
                    "kv_cache_memory_bytes", "enable_prefix_caching", "load_format", "seed", "enforce_eager",
                    "distributed_executor_backend", "async_scheduling", "tune_kernels")


def engine_kwargs(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in ENGINE_ARG_NAMES}


def run_generate(args: argparse.Namespace) -> None:
    from pagedawq import LLM, SamplingParams
    llm = LLM(args.model, **engine_kwargs(args))
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                            seed=args.sampling_seed)
    prompts = args.prompt or ["The capital of France is", "Write a haiku about the sea."]
    if args.chat:
        outs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params)
    else:
        outs = llm.generate(prompts, params)
    for prompt, out in zip(prompts, outs):
        sys.stdout.write(f"### {prompt}\n{out.outputs[0].text}\n\n")
    llm.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pagedawq", description="LLM inference with AWQ int4 kernels")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate text for a few prompts")
    add_engine_arguments(gen)
    gen.add_argument("--prompt", "-p", action="append", help="a prompt (repeatable)")
    gen.add_argument("--chat", action="store_true", help="wrap each prompt in the chat template")
    gen.add_argument("--max-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--sampling-seed", type=int, default=None)
    gen.set_defaults(func=run_generate)

    from pagedawq.quant.cli import add_quantize_arguments, run_quantize
    quant = sub.add_parser("quantize", help="AWQ-quantize a model to an int4 checkpoint")
    add_quantize_arguments(quant)
    quant.set_defaults(func=run_quantize)

    from pagedawq.entrypoints.openai.api_server import add_serve_arguments, run_serve
    serve = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)")
    add_serve_arguments(serve)
    serve.set_defaults(func=run_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
