"""Compile the one-shot all-reduce kernels and the greedy-token exchange for sm_90 without a GPU
and print their SASS as JSON (run as a script, outside the Triton interpreter:
tests/test_one_shot_allreduce.py, tests/test_greedy_exchange.py).

    python -m tests.allreduce_sass plain|fused|pushed|lookup|fused32|greedy
"""
from __future__ import annotations

import json
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from pagedawq.kernels import greedy_exchange as greedy
from pagedawq.kernels import one_shot_allreduce as one_shot
from tests.wgmma_sass import disassemble

ALIGNED = [["tt.divisibility", 16]]   # what Triton infers at launch for 16-byte aligned pointers / sizes


def sass(kernel: str) -> list[str]:
    """fp16 (fused32: float32), rank 0 of 2, pointers (and the all-reduces' sizes) 16-byte multiples,
    16-bit values received thread by thread (``SPIN``): as the engine launches them on a GPU."""
    common = {"RANK": 0, "WORLD": 2, "PROGRAMS": one_shot.PROGRAMS}
    if kernel == "plain":
        fn = one_shot._one_shot_all_reduce_kernel
        sig = {"x_ptr": "*fp16", "out_ptr": "*fp16", "buffer_ptrs": "*i64", "epochs_ptr": "*i32", "numel": "i32",
               "capacity": "i32"}
        constexprs = {**common, "BLOCK": one_shot.BLOCK, "SPIN": True}
        attrs, warps = {(i,): ALIGNED for i in range(6)}, one_shot.NUM_WARPS
    elif kernel == "greedy":
        fn = greedy._greedy_exchange_kernel
        sig = {"logits_ptr": "*fp16", "stride": "i32", "rows": "i32", "valid": "i32", "start": "i32",
               "out_ptr": "*i64", "buffer_ptrs": "*i64", "epochs_ptr": "*i32", "capacity": "i32"}
        constexprs = {**common, "PROGRAMS": greedy.PROGRAMS, "BLOCK": greedy.MAX_BLOCK_V}
        attrs, warps = {(i,): ALIGNED for i in (0, 1, 3, 5, 6, 7)}, greedy.NUM_WARPS   # stride, valid: V / ranks
    else:   # fused; pushed: after a GEMM that pushed its output (launched with PDL, as at decode sizes);
        # lookup: the vocabulary-parallel embedding's; fused32: fused in float32
        fn = one_shot._one_shot_all_reduce_add_rms_norm_kernel
        f = "*fp32" if kernel == "fused32" else "*fp16"
        sig = {"x_ptr": f, "residual_ptr": f, "weight_ptr": f, "out_ptr": f, "residual_out_ptr": f, "buffer_ptrs": "*i64", "epochs_ptr": "*i32", "rows": "i32",
               "hidden": "i32", "capacity": "i32", "eps": "fp32",
               "ids_ptr": "*i64" if kernel == "lookup" else "*i32", "vocab_start": "i32", "vocab_rows": "i32"}
        constexprs = {**common, "BLOCK_H": 4096, "PDL": kernel == "pushed", "PUSHED": kernel == "pushed",
                      "LOOKUP": kernel == "lookup", "SPIN": kernel != "fused32"}
        attrs, warps = {(i,): ALIGNED for i in (0, 1, 2, 3, 4, 5, 6, 8, 9, 11)}, 16
    src = ASTSource(fn, {**sig, **{name: "constexpr" for name in constexprs}}, constexprs=constexprs, attrs=attrs)
    return disassemble(triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps}))


if __name__ == "__main__":
    print(json.dumps(sass(sys.argv[1])))
