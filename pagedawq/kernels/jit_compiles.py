"""Which Triton kernels a block of code compiles, and Triton's rule for which integer arguments
make a new compilation.

Triton compiles a kernel variant the first time a process launches it (or loads it from its disk
cache, which is fast only from the second run on a machine). A variant compiled inside a request
is paid for by that request: seconds of time to first token, or part of a throughput run. The
engine's warm-up (``pagedawq.engine.warmup``) launches every variant up front; ``JitCompiles``
is how the tests and benchmarks check that nothing is left to compile after it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

try:
    from triton import knobs
except ImportError:   # a Triton without knobs: nothing is counted
    knobs = None


def int_specialization(value: int) -> tuple[bool, bool]:
    """What Triton keys a compiled variant on for a plain ``int`` kernel argument: whether it is
    1 and whether it is a multiple of 16. Two token counts alike in both (and in every constexpr)
    launch the same compiled kernel."""
    return value == 1, value % 16 == 0


@dataclass
class JitCompiles:
    """A context manager that records the kernel variants Triton compiles (or loads from its disk
    cache) in this process while it is open, by kernel name, e.g.::

        with JitCompiles() as compiled:
            llm.generate(prompts, params)
        assert not compiled.kernels, compiled.kernels

    ``variants`` holds Triton's description of each (the kernel's launch options and its
    arguments' types and specializations), which tells what made it new. It chains with a hook
    installed before it and restores that hook on exit. Under TRITON_INTERPRET=1 nothing is
    compiled and nothing is recorded."""
    kernels: list[str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)

    def __enter__(self) -> "JitCompiles":
        if knobs is None:
            return self
        self._previous = knobs.runtime.jit_cache_hook

        def hook(*args, **kwargs):
            fn = kwargs.get("fn")
            self.kernels.append(getattr(fn, "name", None) or "?")
            self.variants.append(str(kwargs.get("repr", "?")))
            return self._previous(*args, **kwargs) if self._previous is not None else None

        knobs.runtime.jit_cache_hook = hook
        return self

    def __exit__(self, *exc) -> None:
        if knobs is not None:
            knobs.runtime.jit_cache_hook = self._previous
