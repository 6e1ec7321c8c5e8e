"""Tensor parallelism without Ray (``distributed_executor_backend="mp"``, gloo on CPU): the same
greedy tokens as one device, synchronous and asynchronous; a rank that dies or fails to load
surfaces as EngineDeadError; closing the LLM ends every rank's process."""
from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pagedawq import LLM, SamplingParams
from pagedawq.errors import EngineDeadError, ModelFilesError

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
PROMPTS = [{"prompt_token_ids": list(range(7, 7 + n))} for n in (2, 17, 45)]


def _llm(path, tp: int, **kw) -> LLM:
    return LLM(str(path), device="cpu", dtype="float32", tensor_parallel_size=tp, skip_tokenizer_init=True,
               kv_cache_memory_bytes=32 * 2**20, **kw)


def _tokens(llm: LLM, params=GREEDY) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params, use_tqdm=False)]


@pytest.mark.parametrize("kind", ["fp32", "awq"])
def test_mp_tp2_matches_one_device(gqa_model, kind):
    path = gqa_model[0] if kind == "fp32" else gqa_model[1]
    with _llm(path, 1) as llm:
        single = _tokens(llm)
    with _llm(path, 2, distributed_executor_backend="mp") as llm:
        assert type(llm.llm_engine.executor).__name__ == "MultiprocExecutor"
        assert _tokens(llm) == single


def test_mp_async_scheduling_matches_one_device(gqa_model):
    mixed = [GREEDY, SamplingParams(temperature=0.9, seed=3, max_tokens=12, ignore_eos=True),
             SamplingParams(temperature=0, max_tokens=5, repetition_penalty=1.5, ignore_eos=True)]
    with _llm(gqa_model[0], 1) as llm:
        single = _tokens(llm, mixed)
    with _llm(gqa_model[0], 2, distributed_executor_backend="mp", async_scheduling=True) as llm:
        assert llm.llm_engine.async_scheduling
        assert _tokens(llm, mixed) == single


def test_mp_dead_rank_is_an_error_and_close_ends_the_ranks(gqa_model):
    with _llm(gqa_model[0], 2, distributed_executor_backend="mp") as llm:
        processes = list(llm.llm_engine.executor.processes)
        assert all(p.is_alive() for p in processes)
        processes[1].kill()
        processes[1].join(10)
        with pytest.raises(EngineDeadError, match="worker died"):
            llm.generate(PROMPTS[:1], GREEDY, use_tqdm=False)
        assert not llm.llm_engine.has_unfinished_requests()
    assert not any(p.is_alive() for p in processes)


def test_mp_rank_that_fails_to_load_reports_its_error_and_traceback(gqa_model, tmp_path):
    """The ranks build their workers on command, so a shard that cannot be read comes back as the
    ModelFilesError that one process raises, with the rank's traceback in a note, instead of as a
    bare exit code."""
    broken = tmp_path / "broken"
    shutil.copytree(gqa_model[0], broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFilesError, match="cannot read weights from") as info:
        _llm(broken, 2, distributed_executor_backend="mp")
    assert "raised by tensor-parallel rank" in info.value.__notes__[0] and "Traceback" in info.value.__notes__[0]
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("pagedawq-rank")]


def test_mp_garbage_collected_llm_ends_its_ranks(gqa_model):
    llm = _llm(gqa_model[0], 2, distributed_executor_backend="mp")
    processes = list(llm.llm_engine.executor.processes)
    del llm
    gc.collect()
    for p in processes:
        p.join(15)
    assert not any(p.is_alive() for p in processes)


def test_mp_script_without_main_guard_gets_the_fix(gqa_model, tmp_path):
    """The usual spawn pitfall: each rank re-imports the main script, which builds another LLM and
    dies; the driver's error says so instead of only giving exit codes."""
    script = tmp_path / "no_guard.py"
    script.write_text("from pagedawq import LLM\n"
                      f"LLM({str(gqa_model[0])!r}, device='cpu', dtype='float32', tensor_parallel_size=2,\n"
                      "    skip_tokenizer_init=True, kv_cache_memory_bytes=8 * 2**20, distributed_executor_backend='mp')\n")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    assert "EngineDeadError" in proc.stderr and 'if __name__ == "__main__":' in proc.stderr, proc.stderr[-2000:]
