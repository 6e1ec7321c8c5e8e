"""Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``, the CI tests).

There no inline PTX, programmatic dependent launch or Gluon (Hopper) kernel runs, so the kernels
that use them take their portable path. Read at each call: the tests switch it per process.
"""
from __future__ import annotations

import os


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1``."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
