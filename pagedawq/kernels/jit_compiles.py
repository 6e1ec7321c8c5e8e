"""Which Triton kernels a block of code compiles, and Triton's rule for which integer arguments
make a new compilation.

Triton compiles a kernel variant the first time a process launches it (or loads it from its disk
cache, which is fast only from the second run on a machine). A variant compiled inside a request
is paid for by that request: seconds of time to first token, or part of a throughput run. The
engine's warm-up (``pagedawq.engine.warmup``) launches every variant up front; ``JitCompiles``
is how the warm-up counts them, how the engine reports any compiled after it, and how the tests
and benchmarks check that nothing is left to compile.
"""
from __future__ import annotations

from collections.abc import Callable
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


# The JitCompiles open in this process, in the order they opened. One wrapper around Triton's
# compile step serves them all, installed when the first opens and taken out when the last closes:
# engines and tests open and close them in any order (an engine keeps one open for its lifetime),
# which wrappers chained one on another could not undo. If other code has wrapped Triton's step on
# top of ours meanwhile, taking ours out would drop theirs: ours then stays in their chain, retired
# (it passes compiles through and records nothing), and the next JitCompiles installs a new one.
_OPEN: list["JitCompiles"] = []
_ACTIVE: list = []   # the installed wrapper that records, while any JitCompiles is open


def _wrap(step):
    """A wrapper of Triton's compile ``step`` that records each compile to the open JitCompiles
    while it is the active one."""
    def wrapper(fn, key, *args, **kwargs):
        if _ACTIVE and _ACTIVE[0] is wrapper:
            for watcher in list(_OPEN):
                watcher.record(fn, key)
        return step(fn, key, *args, **kwargs)
    wrapper.step = step
    return wrapper


@dataclass(eq=False)   # open ones are told apart by identity
class JitCompiles:
    """A context manager that records the kernel variants Triton compiles (or loads from its disk
    cache) in this process while it is open, by kernel name, e.g.::

        with JitCompiles() as compiled:
            llm.generate(prompts, params)
        assert not compiled.kernels, compiled.kernels

    ``variants`` holds each one's kernel and Triton's key for it (its arguments' types and
    specializations, its constexprs and launch options), which tells what made it new.
    ``on_compile(kernel name, its module, variant)`` is called for each, as it happens.

    It wraps ``JITFunction._do_compile``, the step a launch takes only when the variant is not in
    the kernel's in-memory cache, while any JitCompiles is open. Not Triton's
    ``knobs.runtime.jit_cache_hook``: with any hook set, Triton 3.6 serialises each launch's
    constexprs to JSON first, and a Gluon kernel's layout constexprs fail that, so the hook broke
    every Gluon launch (the "wgmma_t" GEMM fell back to the slow paths on the H100, session 37).
    Under TRITON_INTERPRET=1, or with a Triton without that step, nothing is recorded."""
    on_compile: Callable[[str, str, str], None] | None = None
    kernels: list[str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)

    def record(self, fn, key) -> None:
        name = getattr(fn, "__name__", None) or repr(fn)
        self.kernels.append(name)
        self.variants.append(f"{name} {key}")
        if self.on_compile is not None:
            self.on_compile(name, getattr(fn, "module", None) or "", self.variants[-1])

    def __enter__(self) -> "JitCompiles":
        if getattr(JITFunction, "_do_compile", None) is None:   # no Triton, or one that moved it
            return self
        if not _OPEN:
            _ACTIVE[:] = [_wrap(JITFunction._do_compile)]
            JITFunction._do_compile = _ACTIVE[0]
        _OPEN.append(self)
        return self

    def __exit__(self, *exc) -> None:
        if self in _OPEN:
            _OPEN.remove(self)
            if not _OPEN:
                wrapper = _ACTIVE.pop()
                if JITFunction._do_compile is wrapper:   # else other code wrapped it: it stays, retired
                    JITFunction._do_compile = wrapper.step
