"""The end-to-end GPU numbers of one session in one process (device time is scarce):

* decode tokens/s of a Llama-2-7B-shaped model (random weights), fp16 vs AWQ int4, batch 1/16/64;
* prefill time of one 2048-token prompt, fp16 vs AWQ;
* offline throughput (N prompts, 512 in / 128 out), fp16 vs AWQ;
* the torch-attention, eager baseline of the engine (batch 1 and 64);
* transformers ``generate`` in fp16 on the same shape (batch 1 and 8);
* the SmolLM2-135M shape in bf16 against transformers (batch 1 and 32);
* ``async``: decode with asynchronous scheduling off and on;
* ``no_pdl``: decode (fp16 and AWQ, batch 1/16/64) without programmatic dependent launch
  (``PAGEDAWQ_DISABLE_PDL=1``), to compare with the ``decode`` rows of the same run;
* ``no_wgmma_t``: AWQ decode at batch 1 and 64, prefill and throughput without the Hopper "wgmma_t"
  GEMM path (``PAGEDAWQ_DISABLE_WGMMA_T=1``), to compare with the ``decode``/``throughput`` rows of
  the same run.

    python benchmarks/e2e_suite.py --sections decode throughput baseline transformers small --out results.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import time
from contextlib import contextmanager

import torch
from common import decode_timing, device_name, now, random_prompts, shape_dir

from pagedawq import LLM, SamplingParams

RESULTS: dict[str, float] = {}


def record(key: str, value: float) -> None:
    RESULTS[key] = value
    print(f"{key:<58} {value:>12.2f}", flush=True)


def engine(model: str, **kw) -> LLM:
    gc.collect()
    torch.cuda.empty_cache()
    kw.setdefault("max_model_len", 4096)
    return LLM(shape_dir(model), load_format="dummy", skip_tokenizer_init=True, **kw)


def decode_tok_s(llm: LLM, batch: int, n_in: int, n_out: int) -> float:
    return batch / decode_timing(llm, batch, n_in, n_out).step


def prefill_ms(llm: LLM, n_tokens: int) -> float:
    eng = llm.llm_engine
    vocab = eng.config.model.vocab_size
    times = []
    for rep in range(3):
        eng.add_request(f"prefill-{rep}", random_prompts(1, n_tokens, vocab, seed=10 + rep)[0],
                        SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
        start = now()
        while eng.has_unfinished_requests():
            eng.step()
        times.append(now() - start)
    return 1000 * sorted(times)[1]


def throughput(llm: LLM, n_prompts: int, n_in: int, n_out: int) -> tuple[float, float]:
    vocab = llm.llm_engine.config.model.vocab_size
    prompts = random_prompts(n_prompts, n_in, vocab, seed=5)
    params = [SamplingParams(temperature=1.0, max_tokens=n_out, ignore_eos=True, seed=i) for i in range(n_prompts)]
    llm.generate(prompts[:16], params[:16], use_tqdm=False)
    start = now()
    llm.generate(prompts, params, use_tqdm=False)
    elapsed = now() - start
    return n_prompts / elapsed, n_prompts * n_out / elapsed


def section_decode(args) -> None:
    for quant in (None, "awq"):
        tag = quant or "fp16"
        llm = engine(args.model, dtype="float16", quantization=quant, max_num_seqs=256)
        for batch in (1, 16, 64):
            record(f"decode tok/s  {args.model} {tag} batch {batch}", decode_tok_s(llm, batch, 32, args.output_len))
        record(f"prefill ms    {args.model} {tag} 2048 tokens", prefill_ms(llm, 2048))
        if "throughput" in args.sections:
            rps, tps = throughput(llm, args.num_prompts, 512, 128)
            record(f"throughput req/s   {tag} {args.num_prompts} x 512/128", rps)
            record(f"throughput out tok/s {tag} {args.num_prompts} x 512/128", tps)
        RESULTS[f"peak GiB {tag}"] = torch.cuda.max_memory_allocated() / 2**30
        llm.close()
        del llm


def section_async(args) -> None:
    """Decode speed with asynchronous scheduling off and on (the default on one GPU), same run."""
    for quant in (None, "awq"):
        tag = quant or "fp16"
        for mode in (False, True):
            llm = engine(args.model, dtype="float16", quantization=quant, max_num_seqs=256, async_scheduling=mode)
            for batch in (1, 64):
                record(f"decode tok/s  {args.model} {tag} batch {batch} async={mode}",
                       decode_tok_s(llm, batch, 32, args.output_len))
            llm.close()
            del llm


@contextmanager
def switched_off(env_var: str):
    """``env_var=1`` for the engines built inside (the switches are read at load or first launch)."""
    from pagedawq.kernels.pdl import pdl_enabled
    os.environ[env_var] = "1"
    pdl_enabled.cache_clear()
    try:
        yield
    finally:
        del os.environ[env_var]
        pdl_enabled.cache_clear()


def section_no_wgmma_t(args) -> None:
    """AWQ without the "wgmma_t" path (a fresh engine, whose weights are then not repacked)."""
    with switched_off("PAGEDAWQ_DISABLE_WGMMA_T"):
        llm = engine(args.model, dtype="float16", quantization="awq", max_num_seqs=256)
        for batch in (1, 64):
            record(f"decode tok/s  {args.model} awq batch {batch} without wgmma_t",
                   decode_tok_s(llm, batch, 32, args.output_len))
        record(f"prefill ms    {args.model} awq 2048 tokens without wgmma_t", prefill_ms(llm, 2048))
        rps, tps = throughput(llm, args.num_prompts, 512, 128)
        record(f"throughput out tok/s awq {args.num_prompts} x 512/128 without wgmma_t", tps)
        llm.close()


def section_no_pdl(args) -> None:
    """Decode without programmatic dependent launch (fresh engines, kernels and CUDA graphs)."""
    with switched_off("PAGEDAWQ_DISABLE_PDL"):
        for quant in (None, "awq"):
            tag = quant or "fp16"
            llm = engine(args.model, dtype="float16", quantization=quant, max_num_seqs=256)
            for batch in (1, 16, 64):
                record(f"decode tok/s  {args.model} {tag} batch {batch} without PDL",
                       decode_tok_s(llm, batch, 32, args.output_len))
            llm.close()
            del llm


def section_baseline(args) -> None:
    llm = engine(args.model, dtype="float16", attention_backend="torch", enforce_eager=True, max_num_seqs=64)
    for batch in (1, 64):
        record(f"decode tok/s  {args.model} fp16 torch-attention eager batch {batch}",
               decode_tok_s(llm, batch, 32, 32))
    llm.close()


@torch.inference_mode()
def hf_tok_s(path: str, dtype: torch.dtype, batch: int, n_in: int, n_out: int) -> float:
    import transformers
    config = transformers.AutoConfig.from_pretrained(path)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    ids = torch.randint(10, config.vocab_size - 1, (batch, n_in), device="cuda")
    kw = dict(max_new_tokens=n_out, min_new_tokens=n_out, do_sample=False, pad_token_id=0)
    model.generate(ids, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})
    start = now()
    model.generate(ids, **kw)
    elapsed = now() - start
    del model
    return batch * n_out / elapsed


def section_transformers(args) -> None:
    gc.collect()
    torch.cuda.empty_cache()
    for batch in (1, 8):
        record(f"transformers tok/s {args.model} fp16 batch {batch}",
               hf_tok_s(shape_dir(args.model), torch.float16, batch, 32, 64))


def section_small(args) -> None:
    llm = engine("smollm2-135m", dtype="bfloat16", max_num_seqs=64)
    for batch in (1, 32):
        record(f"decode tok/s  smollm2-135m bf16 batch {batch}", decode_tok_s(llm, batch, 32, 64))
    llm.close()
    for batch in (1, 32):
        record(f"transformers tok/s smollm2-135m bf16 batch {batch}",
               hf_tok_s(shape_dir("smollm2-135m"), torch.bfloat16, batch, 32, 64))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="llama-2-7b")
    p.add_argument("--sections", nargs="+", default=["decode", "throughput", "baseline", "transformers", "small"])
    p.add_argument("--num-prompts", type=int, default=1000)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    print(f"device: {device_name()}  torch {torch.__version__}  date {time.strftime('%Y-%m-%d')}", flush=True)
    sections = {"decode": section_decode, "async": section_async, "baseline": section_baseline, "transformers": section_transformers,
                "small": section_small, "no_wgmma_t": section_no_wgmma_t, "no_pdl": section_no_pdl}
    for name in args.sections:
        if name in sections:
            start = time.perf_counter()
            try:
                sections[name](args)
            except Exception as e:   # keep the other sections' numbers when one fails
                print(f"section {name} failed: {type(e).__name__}: {e}", flush=True)
            print(f"[section {name}: {time.perf_counter() - start:.0f} s]", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(RESULTS, f, indent=1)


if __name__ == "__main__":
    main()
