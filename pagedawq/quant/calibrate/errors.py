"""Exceptions raised for bad quantization input, each a standard type so callers can catch broadly.

Messages say what to change, because the usual reader is someone at a command line.
"""
from __future__ import annotations


class QuantizeOptionError(ValueError):
    """An option value the AWQ GEMM format cannot express (bits, group size, version)."""


class UnsupportedArchitectureError(ValueError):
    """The model is not one of the decoder architectures the calibration knows how to walk."""


class CalibrationDataError(ValueError):
    """The calibration text is missing, malformed or too short."""


class OutputExistsError(FileExistsError):
    """The output directory already holds files and ``overwrite`` was not given."""


class NonFiniteError(ArithmeticError):
    """NaN or inf appeared during the search; the message names the decoder layer."""
