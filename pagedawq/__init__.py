"""pagedawq: a vLLM-style inference engine whose linear layers run AWQ int4 kernels.

Public API: :class:`LLM`, :class:`SamplingParams`, :class:`RequestOutput`, :class:`CompletionOutput`.
"""
from pagedawq.engine.llm import LLM
from pagedawq.outputs import CompletionOutput, RequestOutput
from pagedawq.sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput"]
__version__ = "0.1.0"
