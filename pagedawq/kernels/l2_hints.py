"""An L2 evict-first hint on the weight loads of the Hopper AWQ kernels, added to their PTX.

In a decode step every weight of the model (gigabytes) streams once through an L2 of 50-60 MB. With
the default policy that stream evicts what the small kernels between the GEMMs use again: their code
and launch parameters, the residual, the norm weights, the block table, the KV cache of short
contexts. Each of those kernels then starts with DRAM trips on its critical path.
``benchmarks/experiments/l2_cold_start_probe.py`` measured this on an H100 after a 256 MB read:
- an RMSNorm took 3.29 µs instead of 1.98, and 2.34 when the read was evict-first;
- a batch-1 decode attention took 7.23 µs instead of 5.30, and 5.67 when the read was evict-first.
With the weights of the "wgmma_t" kernels hinted, the 13B batch-1 decode step took 1.6-1.7% less
time at TP=1 and TP=2 (RESULTS.md "Session 35").

Triton 3.6's Gluon TMA load takes no cache policy, so the hint is written into the PTX instead. A
kernel asks for it with a PTX comment, ``marker(i, ...)``, naming its TMA descriptors (in signature
order) that stream data it reads once; ``awq_wgmma_t.mark_weight_stream`` emits it for the weights
and the zero/scale rows of a launch with one token tile. A compile hook
(``triton.knobs.runtime.add_stages_inspection_hook``) wraps the PTX stage, and in a marked kernel:
- creates one evict-first policy at the kernel's start;
- adds that policy as the cache hint of every TMA load through the named descriptors.
The activations keep the default policy, since every CTA reads them. Unmarked PTX passes through
unchanged.
"""
from __future__ import annotations

import hashlib
import logging
import re

logger = logging.getLogger(__name__)

MARKER = "// pagedawq:l2-evict-first-descriptors"
POLICY_REG = "%pagedawq_l2_evict_first"
# What Triton >= 3.9 adds to its cache keys for this hook: this module's source, so that a change
# to the rewrite recompiles. (Triton 3.6 keys on the kernels' source alone.)
with open(__file__, "rb") as _f:
    _HOOK_DIGEST = hashlib.sha256(_f.read()).hexdigest()[:16]
HOOK_KEY = "pagedawq-l2-evict-first-" + _HOOK_DIGEST

_ENTRY = re.compile(r"^\s*(?:\.visible\s+)?\.entry\s+(\w+)\s*\(", re.M)
_DESC_PARAM = re.compile(r"\.param\s+\.align\s+64\s+\.b8\s+(\w+)\[128\]")
_COPY = re.compile(r"^\s*(?:mov|cvt|cvta)\.[\w.]+\s+(%\w+),\s*(%?\w+)\s*;", re.M)
_MARK = re.compile(re.escape(MARKER) + r"((?: \d+)+)")
_TMA_LOAD = re.compile(r"^(\s*(?:@!?%p\d+\s+)?)(cp\.async\.bulk\.tensor\.\S+?)(\s+\[[^\]]*\],\s*\[\s*(%rd\d+)\s*,.*?)\s*;\s*$")


def marker(*descriptors: int) -> str:
    """The PTX comment that asks for the hint on the TMA loads through these descriptors (indices
    among the kernel's tensor-descriptor parameters, in signature order)."""
    return MARKER + "".join(f" {i}" for i in descriptors)


def _registers_of(copies: list[tuple[str, str]], param: str) -> set[str]:
    """The registers holding the address of the descriptor parameter ``param``: the chain of
    ``copies`` (destination, source) from it, the PTX's moves and conversions (``mov.b32 %r, param``,
    ``cvt.u64.u32``, ``cvta.param.u64``, as Triton 3.6 and 3.9 emit them)."""
    regs = {param}
    while True:
        grown = regs | {dst for dst, src in copies if src in regs}
        if grown == regs:
            return regs - {param}
        regs = grown


def add_evict_first(ptx: str) -> tuple[str, int]:
    """``ptx`` with the evict-first hint on the TMA loads that its ``marker`` names, and the number
    of loads changed (0, with ``ptx`` unchanged, where it has no marker)."""
    entry, mark = _ENTRY.search(ptx), _MARK.search(ptx)
    if entry is None or mark is None or POLICY_REG in ptx:
        return ptx, 0
    params, copies = _DESC_PARAM.findall(ptx), _COPY.findall(ptx)
    weight_regs = set()
    for i in map(int, mark.group(1).split()):
        if i < len(params):
            weight_regs |= _registers_of(copies, params[i])
    lines, changed, body_at = ptx.splitlines(), 0, None
    entry_line = ptx.count("\n", 0, entry.start())
    for n, line in enumerate(lines):
        if body_at is None and n > entry_line and line.strip() == "{":
            body_at = n + 1
        m = _TMA_LOAD.match(line)
        if m and m.group(4) in weight_regs and "cache_hint" not in m.group(2) and ".global" in m.group(2):
            lines[n] = f"{m.group(1)}{m.group(2)}.L2::cache_hint{m.group(3)}, {POLICY_REG};"
            changed += 1
    if not changed or body_at is None:
        return ptx, 0
    while lines[body_at].strip().startswith((".reg", ".shared", ".local", "//")) or not lines[body_at].strip():
        body_at += 1
    lines[body_at:body_at] = [f"\t.reg .b64 \t{POLICY_REG};",
                              f"\tcreatepolicy.fractional.L2::evict_first.b64 \t{POLICY_REG}, 1.0;"]
    return "\n".join(lines) + ("\n" if ptx.endswith("\n") else ""), changed


def _hinted(make_ptx):
    def stage(src, metadata):
        ptx = make_ptx(src, metadata)
        hinted, changed = add_evict_first(ptx)
        if not changed and MARKER in ptx:
            entry = _ENTRY.search(ptx)
            logger.warning("no TMA load of %s took the L2 evict-first hint it asks for (its PTX has another "
                           "form); it computes the same, perhaps more slowly",
                           entry.group(1) if entry else "a kernel")
        return hinted
    return stage


def install() -> None:
    """Install the compile hook (once a process, chained after any hook already installed). A
    Triton without such hooks compiles the kernels without the hint."""
    try:
        from triton import knobs
    except ImportError:
        return
    runtime = knobs.runtime
    missing = object()
    previous = getattr(runtime, "add_stages_inspection_hook", missing)
    if previous is missing or getattr(previous, "pagedawq_l2_hints", False):
        return
    own_key = (HOOK_KEY, _HOOK_DIGEST)

    def hook(*args):
        if not args:   # Triton >= 3.9 asks for the pipeline's cache key, at every launch: keep it cheap
            if previous is None:
                return own_key
            key, digest = previous()
            return key + HOOK_KEY, digest + _HOOK_DIGEST
        backend, stages, options, language, capability = args
        if previous is not None:
            previous(*args)
        if capability is not None and capability >= 90 and "ptx" in stages:
            stages["ptx"] = _hinted(stages["ptx"])

    hook.pagedawq_l2_hints = True
    runtime.add_stages_inspection_hook = hook
