"""Wall time and peak device memory of AWQ calibration on a random-weight model of a real shape.

    python benchmarks/calibration_speed.py --shape llama-2-7b --tokenizer DIR --calib-data ../shared/data/wikitext2-valid.txt

The model is created with transformers from the shape (on the GPU when there is one, then saved),
so no weights are needed; ``--tokenizer`` is any HF tokenizer directory (its vocabulary sets the
embedding size). Only ``quantize`` is timed.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
import transformers
from common import SHAPES

from pagedawq.quant import quantize


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--calib-data", required=True)
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--n-samples", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp())
    tok = transformers.AutoTokenizer.from_pretrained(args.tokenizer)
    shape = dict(SHAPES[args.shape], vocab_size=len(tok))
    config = transformers.LlamaConfig(**shape)
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    model.cpu().save_pretrained(work / "model")
    del model
    tok.save_pretrained(work / "model")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    quantize(str(work / "model"), work / "awq", group_size=args.group_size, calib_data=args.calib_data,
             n_samples=args.n_samples, seq_len=args.seq_len, device=args.device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    print(f"AWQ calibration, {args.shape} shape (random weights), {args.n_samples}x{args.seq_len} tokens, "
          f"g{args.group_size}, {device}: {elapsed:.1f} s, peak device memory {peak:.2f} GiB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
