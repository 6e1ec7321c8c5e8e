"""Is anything running on a tensor-parallel rank's GPU while the engine is idle?

Session 32: in the 13B TP=2 decode graph (PDL off) rank 1 starts each kernel ~0.35 us later than
rank 0, on either card, busy host or not; a graph of tiny kernels starts them equally fast on
either ordinal. A kernel left running on rank 1's GPU (a wait on a flag that never comes, on a
stream of its own) would slow every launch there and show in no trace, since a trace lists kernels
as they end. This builds the 13B AWQ model at TP=2 (as tp_suite.py does), and samples nvidia-smi's
utilization and power of every GPU for a few seconds of idle after start-up, and again after a
generation. Session 32 (2xH200): both GPUs at 0% (median) in both idle spells: no kernel left running.

    python benchmarks/experiments/idle_gpu_probe.py [--model llama-2-13b] [--tp 2]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from common import shape_dir  # noqa: E402

from pagedawq import LLM, SamplingParams  # noqa: E402


def sample(seconds: float) -> dict[str, list[tuple[float, float]]]:
    """{gpu index: [(utilization %, power W), ...]} every 100 ms for ``seconds``."""
    by_gpu: dict[str, list[tuple[float, float]]] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,utilization.gpu,power.draw", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True).stdout
        for line in out.strip().splitlines():
            index, util, power = (field.strip() for field in line.split(","))
            by_gpu.setdefault(index, []).append((float(util), float(power)))
        time.sleep(0.1)
    return by_gpu


def report(label: str, by_gpu: dict[str, list[tuple[float, float]]]) -> None:
    for index, rows in sorted(by_gpu.items()):
        utils, powers = zip(*rows)
        print(f"{label}: GPU {index} utilization median {statistics.median(utils):.0f}% (max {max(utils):.0f}), "
              f"power median {statistics.median(powers):.0f} W over {len(rows)} samples", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="llama-2-13b")
    p.add_argument("--tp", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0)
    args = p.parse_args()
    report("before start-up", sample(1.0))
    llm = LLM(shape_dir(args.model), load_format="dummy", skip_tokenizer_init=True, dtype="float16",
              quantization="awq", tensor_parallel_size=args.tp, max_model_len=4096)
    report("idle after start-up", sample(args.seconds))
    llm.generate([{"prompt_token_ids": list(range(1, 33))}], SamplingParams(temperature=0, max_tokens=64, ignore_eos=True),
                 use_tqdm=False)
    report("idle after a generation", sample(args.seconds))
    llm.close()


if __name__ == "__main__":
    main()
