"""Experiment (issues 4 and 6): how many weight stages the "wgmma_t" GEMM should request before its PDL wait.

With programmatic dependent launch (``pagedawq/kernels/pdl.py``) a decode GEMM is scheduled while the
small kernel before it runs and requests its first ``stages`` pipeline steps of weights before
``griddepcontrol.wait``; deeper pipelines prefetch more of the layer during that kernel. The kernel
sweep (GEMMs back to back, no small kernel between) cannot show this; this times 7B AWQ decode at
batch 1 and 16 with the token tiles of <= 16 tokens given 2, 4 or 6 steps of 4 K tiles (the rule: 2).

    python benchmarks/experiments/pdl_prefetch_depth.py      # GPU (Hopper)
"""
from __future__ import annotations

import os
import sys
from dataclasses import replace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import e2e_suite  # noqa: E402
from e2e_suite import decode_tok_s, engine  # noqa: E402

import pagedawq.kernels.awq_gemm as awq_gemm_mod  # noqa: E402
from pagedawq.kernels.awq_configs import wgmma_t_config  # noqa: E402


def main() -> None:
    print(e2e_suite.device_name(), flush=True)
    for stages in (2, 4, 6, 2):
        awq_gemm_mod.wgmma_t_config = lambda m, *rest, s=stages: (
            replace(wgmma_t_config(m, *rest), stages=s) if m <= 16 else wgmma_t_config(m, *rest))
        llm = engine("llama-2-7b", dtype="float16", quantization="awq", max_num_seqs=64)
        for batch in (1, 16):
            print(f"stages {stages} batch {batch}: {decode_tok_s(llm, batch, 32, 128):.1f} tok/s", flush=True)
        llm.close()
        del llm


if __name__ == "__main__":
    main()
