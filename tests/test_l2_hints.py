"""The L2 evict-first hint written into the PTX of kernels that mark their weight streams
(pagedawq/kernels/l2_hints.py). The compiled kernels are checked in test_awq_wgmma_t.py."""
from __future__ import annotations

import inspect

import pytest

from pagedawq.kernels import l2_hints
from pagedawq.kernels.awq_configs import WgmmaTConfig

# The shape of Triton 3.9's PTX for a kernel of three TMA descriptors (x, w, zs): each address
# goes through a 32-bit move, a widening and a cvta before the loads use it.
PTX = """//
.version 8.7
.target sm_90a
.address_size 64

.visible .entry k(
\t.param .align 64 .b8 k_param_0[128],
\t.param .u32 k_param_1,
\t.param .align 64 .b8 k_param_2[128],
\t.param .align 64 .b8 k_param_3[128]
)
{
\t.reg .pred \t%p<4>;
\t.reg .b32 \t%r<40>;
\t.reg .b64 \t%rd<10>;

\tmov.b32 \t%r20, k_param_0;
\tmov.b32 \t%r21, k_param_2;
\tmov.b32 \t%r22, k_param_3;
\tcvt.u64.u32 \t%rd5, %r20;
\tcvt.u64.u32 \t%rd6, %r21;
\tcvt.u64.u32 \t%rd7, %r22;
\tcvta.param.u64 \t%rd1, %rd5;
\tcvta.param.u64 \t%rd2, %rd6;
\tcvta.param.u64 \t%rd3, %rd7;
\t// begin inline asm
\tMARK
\tmov.b32 %r1, %r2;
\t// end inline asm
\t@%p1 cp.async.bulk.tensor.3d.shared::cta.global.mbarrier::complete_tx::bytes [%r25], [%rd1, {%r3, %r4, %r5}], [%r30];
\t@%p2 cp.async.bulk.tensor.3d.shared::cta.global.mbarrier::complete_tx::bytes [%r26], [%rd2, {%r3, %r4, %r5}], [%r30];
\tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r27], [%rd3, {%r6, %r7}], [%r30];
\tret;
}
"""


def _ptx(mark: str) -> str:
    return PTX.replace("MARK", mark)


def test_the_marked_descriptors_loads_get_the_policy_and_the_others_do_not():
    ptx, changed = l2_hints.add_evict_first(_ptx(l2_hints.marker(1, 2)))
    assert changed == 2
    loads = [ln.strip() for ln in ptx.splitlines() if "cp.async.bulk.tensor" in ln]
    assert loads[0] == ("@%p1 cp.async.bulk.tensor.3d.shared::cta.global.mbarrier::complete_tx::bytes [%r25], "
                        "[%rd1, {%r3, %r4, %r5}], [%r30];")   # descriptor 0 (x): untouched
    assert loads[1] == ("@%p2 cp.async.bulk.tensor.3d.shared::cta.global.mbarrier::complete_tx::bytes.L2::cache_hint "
                        f"[%r26], [%rd2, {{%r3, %r4, %r5}}], [%r30], {l2_hints.POLICY_REG};")
    assert loads[2].endswith(f"[%rd3, {{%r6, %r7}}], [%r30], {l2_hints.POLICY_REG};")
    assert "::bytes.L2::cache_hint [%r27]" in loads[2]
    lines = [ln.strip() for ln in ptx.splitlines()]
    # the policy register is declared after the kernel's own declarations and created before any use
    declared = lines.index(f".reg .b64 \t{l2_hints.POLICY_REG};")
    created = lines.index(f"createpolicy.fractional.L2::evict_first.b64 \t{l2_hints.POLICY_REG}, 1.0;")
    assert [ln for ln in lines[:declared] if ln][-1] == ".reg .b64 \t%rd<10>;" and created == declared + 1
    assert created < lines.index("mov.b32 \t%r20, k_param_0;")
    # once is enough: a hinted kernel is left as it is
    assert l2_hints.add_evict_first(ptx) == (ptx, 0)


def test_only_the_descriptors_the_marker_names_are_hinted():
    ptx, changed = l2_hints.add_evict_first(_ptx(l2_hints.marker(2)))
    assert changed == 1
    hinted = [ln for ln in ptx.splitlines() if "cache_hint" in ln]
    assert len(hinted) == 1 and "[%rd3," in hinted[0]


def test_unmarked_ptx_passes_through_unchanged():
    ptx = _ptx("// no marker")
    assert l2_hints.add_evict_first(ptx) == (ptx, 0)


def test_a_marked_kernel_whose_loads_are_not_recognised_is_left_alone_and_reported(caplog):
    # the weight descriptors' addresses reach the loads through an instruction the rewrite does not follow
    ptx = _ptx(l2_hints.marker(1, 2)).replace("cvta.param.u64 \t%rd2, %rd6;", "add.s64 \t%rd2, %rd6, 0;")
    ptx = ptx.replace("cvta.param.u64 \t%rd3, %rd7;", "add.s64 \t%rd3, %rd7, 0;")
    stage = l2_hints._hinted(lambda src, metadata: ptx)
    with caplog.at_level("WARNING", logger=l2_hints.__name__):
        assert stage(None, {}) == ptx
    assert "no TMA load of k took the L2 evict-first hint" in caplog.text


def test_the_kernels_marker_is_the_one_the_rewrite_looks_for():
    from pagedawq.kernels import awq_wgmma_t
    source = inspect.getsource(awq_wgmma_t.mark_weight_stream.fn)
    assert f'"{l2_hints.marker(1, 2)}\\n' in source


class _Knobs:
    def __init__(self, hook=None) -> None:
        self.add_stages_inspection_hook = hook


def test_the_hook_wraps_the_ptx_stage_keys_the_cache_and_chains(monkeypatch):
    from triton import knobs
    calls = []

    def earlier(*args):
        calls.append(len(args))
        return ("earlier;", "e0") if not args else None

    runtime = _Knobs(earlier)
    monkeypatch.setattr(knobs, "runtime", runtime)
    l2_hints.install()
    l2_hints.install()   # a second install keeps the one hook
    hook = runtime.add_stages_inspection_hook
    assert getattr(hook, "pagedawq_l2_hints", False)
    key, digest = hook()   # Triton >= 3.9: the cache key of the pipeline
    assert key == "earlier;" + l2_hints.HOOK_KEY and digest.startswith("e0")
    stages = {"ttgir": object(), "ptx": lambda src, metadata: _ptx(l2_hints.marker(1, 2))}
    hook(object(), stages, None, None, 90)
    assert "cache_hint" in stages["ptx"](None, {}) and calls == [0, 5]
    older = {"ptx": lambda src, metadata: _ptx(l2_hints.marker(1, 2))}
    hook(object(), older, None, None, 80)   # no TMA before Hopper: the stage is not wrapped
    assert "cache_hint" not in older["ptx"](None, {})


@pytest.mark.parametrize("m,block_t,once", [(1, 8, True), (8, 8, True), (9, 8, False), (64, 64, True),
                                            (65, 64, False), (1024, 128, False)])
def test_a_launch_streams_its_weights_when_it_has_one_token_tile(m, block_t, once, monkeypatch):
    from pagedawq.kernels.awq_wgmma_t import streams_weights
    assert streams_weights(m, WgmmaTConfig(64, block_t)) is once
    monkeypatch.setenv("PAGEDAWQ_DISABLE_L2_HINTS", "1")
    assert not streams_weights(m, WgmmaTConfig(64, block_t))


def test_the_hook_alone_keys_the_cache_with_this_module(monkeypatch):
    from triton import knobs
    runtime = _Knobs()
    monkeypatch.setattr(knobs, "runtime", runtime)
    l2_hints.install()
    key, digest = runtime.add_stages_inspection_hook()
    assert key == l2_hints.HOOK_KEY and digest and digest in key   # the key names this module's source digest
