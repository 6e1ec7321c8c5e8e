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
    from triton.runtime.jit import JITFunction
except ImportError:   # no Triton: nothing is compiled, nothing is counted
    JITFunction = None


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

    ``variants`` holds each one's kernel and Triton's key for it (its arguments' types and
    specializations, its constexprs and launch options), which tells what made it new.

    It wraps ``JITFunction._do_compile``, the step a launch takes only when the variant is not in
    the kernel's in-memory cache, and restores it on exit (nesting is fine). Not Triton's
    ``knobs.runtime.jit_cache_hook``: with any hook set, Triton 3.6 serialises each launch's
    constexprs to JSON first, and a Gluon kernel's layout constexprs fail that, so the hook broke
    every Gluon launch (the "wgmma_t" GEMM fell back to the slow paths on the H100, session 37).
    Under TRITON_INTERPRET=1, or with a Triton without that step, nothing is recorded."""
    kernels: list[str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)

    def __enter__(self) -> "JitCompiles":
        self._previous = previous = getattr(JITFunction, "_do_compile", None)
        if previous is None:   # no Triton, or one that moved its compile step: nothing is counted
            return self

        def do_compile(fn, key, *args, **kwargs):
            name = getattr(fn, "__name__", None) or repr(fn)
            self.kernels.append(name)
            self.variants.append(f"{name} {key}")
            return previous(fn, key, *args, **kwargs)

        JITFunction._do_compile = do_compile
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            JITFunction._do_compile = self._previous
