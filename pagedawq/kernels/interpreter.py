"""Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``, the CI tests).

There no inline PTX, programmatic dependent launch or Gluon (Hopper) kernel runs, so the kernels
that use them take their portable path. Read at each call: the tests switch it per process.
"""
from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1``."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def compiled_sm90(device: torch.device, disable_var: str) -> bool:
    """Whether a Hopper-or-later feature (inline PTX of sm_90: PDL, thread-block clusters) runs on
    ``device``: a CUDA GPU (not ROCm) of compute capability 9 or later, kernels compiled rather
    than interpreted, and the feature not turned off by ``disable_var=1``."""
    return (device.type == "cuda" and torch.version.hip is None and not interpreting()
            and os.environ.get(disable_var, "0") != "1"
            and torch.cuda.get_device_capability(device)[0] >= 9)
