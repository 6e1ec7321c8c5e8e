"""Exceptions a user can act on. Each message says what to change.

They subclass the builtin a caller would naturally catch (ValueError for bad arguments,
FileNotFoundError for missing files, RuntimeError for resource limits).
"""
from __future__ import annotations


class PagedAWQError(Exception):
    """Base class of every error pagedawq raises on purpose."""


class InvalidSamplingParamsError(PagedAWQError, ValueError):
    """A SamplingParams field is out of range or of the wrong type."""


class InvalidPromptError(PagedAWQError, ValueError):
    """A prompt is empty, malformed, holds out-of-vocabulary ids, or is too long for the model."""


class PromptTooLongError(InvalidPromptError):
    """Prompt (plus at least one generated token) does not fit in ``max_model_len``."""


class UnsupportedModelError(PagedAWQError, ValueError):
    """The checkpoint's architecture or one of its options is not implemented."""


class ModelFilesError(PagedAWQError, FileNotFoundError):
    """A model path, its config, weights or tokenizer files are missing or unreadable."""


class InsufficientMemoryError(PagedAWQError, RuntimeError):
    """The model's weights (a rank's shard of them) do not fit in the GPU's free memory."""


class InsufficientKVCacheError(PagedAWQError, RuntimeError):
    """The KV cache cannot hold even one sequence of ``max_model_len`` tokens."""


class EngineDeadError(PagedAWQError, RuntimeError):
    """A worker died or failed; the engine cannot continue."""
