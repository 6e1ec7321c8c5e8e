"""Run Triton kernels in the CPU interpreter on machines without CUDA (CI), compiled otherwise."""
from __future__ import annotations

import importlib
import os
import sys

import torch


def interpret_without_cuda(*module_names: str) -> bool:
    """Whether CUDA is available; without it, set ``TRITON_INTERPRET=1`` for the whole process.

    Triton picks interpreter or compiler when ``triton.language`` is imported and when each
    ``@triton.jit`` runs, so kernel modules that an earlier test imported before the variable was
    set are reloaded (``module_names``)."""
    if torch.cuda.is_available():
        return True
    os.environ["TRITON_INTERPRET"] = "1"
    for name in module_names:
        if name in sys.modules:
            importlib.reload(sys.modules[name])
    return False
