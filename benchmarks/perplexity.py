"""WikiText-2 perplexity of the fp model, its RTN quantization and AWQ checkpoints.

Convention of the AWQ/GPTQ papers (see shared/data/README.md): the raw test text is tokenized
once (no special tokens), cut into non-overlapping windows of ``--window`` tokens, the token NLL
is averaged over every predicted token of the first ``--windows`` windows, and exponentiated.
All models see the same windows. Forward passes use transformers in float32 on the CPU:

* fp:  the reference model as stored;
* RTN: every decoder linear rounded to nearest in the same format (w_bit, group size, fp16
  scales), other weights rounded to fp16, i.e. what an RTN checkpoint would encode;
* AWQ: a checkpoint directory, dequantized ((q - z) * s) into a transformers model of its config,
  numerically the function the int4 kernels compute.

Example:
    python benchmarks/perplexity.py --window 2048 --windows 40 --group-size 64 --awq /tmp/smollm2-awq
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
sys.path.insert(0, str(REPO))  # run as a script from a checkout


def test_tokens(tokenizer, path: Path) -> torch.Tensor:
    text = path.read_text(encoding="utf-8")
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.int64)


@torch.no_grad()
def perplexity(model: torch.nn.Module, tokens: torch.Tensor, window: int, windows: int) -> float:
    """exp(mean NLL) over the first ``windows`` non-overlapping windows of ``window`` tokens."""
    nll, count = 0.0, 0
    for i in range(windows):
        ids = tokens[i * window:(i + 1) * window].unsqueeze(0)
        logits = model(input_ids=ids).logits[0, :-1].float()
        nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        count += ids.shape[1] - 1
    return math.exp(nll / count)


def main() -> None:
    from transformers import AutoTokenizer

    from pagedawq.quant.calibrate.api import resolve_model_dir
    from pagedawq.quant.calibrate.rtn import WeightQuant, rtn_quantize_model
    from pagedawq.quant.calibrate.walk import load_model
    from pagedawq.quant.checkpoint import load_dequantized

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="fp model directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--awq", nargs="*", default=[], type=Path, help="AWQ checkpoint directories")
    parser.add_argument("--no-fp", dest="fp", action="store_false", help="skip the fp model")
    parser.add_argument("--no-rtn", dest="rtn", action="store_false", help="skip the RTN model")
    parser.add_argument("--w-bit", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=64, help="RTN group size (default 64)")
    parser.add_argument("--window", type=int, default=2048, help="tokens per window (default 2048)")
    parser.add_argument("--windows", type=int, default=0, help="number of windows (default: all)")
    parser.add_argument("--data", type=Path, default=DATA / "wikitext2-raw-test.txt")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model_dir = resolve_model_dir(args.model)
    tokens = test_tokens(AutoTokenizer.from_pretrained(model_dir), args.data)
    available = tokens.numel() // args.window
    windows = min(args.windows or available, available)
    print(f"data {args.data.name}: {tokens.numel()} tokens; window {args.window}, "
          f"first {windows} of {available} windows ({windows * (args.window - 1)} predicted tokens)")

    runs = []
    if args.fp:
        runs.append(("fp32", lambda: load_model(model_dir, torch.float32)))
    if args.rtn:
        wq = WeightQuant(args.w_bit, args.group_size)
        runs.append((f"RTN w{args.w_bit} g{args.group_size}",
                     lambda: rtn_quantize_model(load_model(model_dir, torch.float32), wq)))
    for path in args.awq:
        runs.append((f"AWQ {path}", lambda path=path: load_dequantized(path, torch.float32)))

    print("| model | perplexity | window | windows | seconds |\n| --- | --- | --- | --- | --- |")
    for name, build in runs:
        started = time.perf_counter()
        ppl = perplexity(build(), tokens, args.window, windows)
        print(f"| {name} | {ppl:.4f} | {args.window} | {windows} | {time.perf_counter() - started:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
