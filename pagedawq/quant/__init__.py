"""Weight quantization: the AWQ calibration (``quantize``) and the checkpoint formats it writes.

Importing this package is light (torch only): transformers is loaded when a model is.
"""
from pagedawq.quant.calibrate.api import quantize

__all__ = ["quantize"]
