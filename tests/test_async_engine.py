"""The async engine front on a tiny random model: concurrent streams give the offline LLM's tokens,
aborts free KV blocks, the queue bound refuses at once, a failing step fails every stream (and the
server's /health) instead of hanging, and shutdown stops the thread and the engine.

Every wait is bounded by ``asyncio.wait_for``.
"""
from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from pagedawq import LLM, SamplingParams
from pagedawq.entrypoints.async_engine import AsyncLLMEngine, EngineStoppedError, QueueFullError
from pagedawq.errors import EngineDeadError

TIMEOUT = 30.0
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


def make_llm(path) -> LLM:
    return LLM(str(path), device="cpu", dtype="float32", skip_tokenizer_init=True, kv_cache_memory_bytes=16 * 2**20)


def prompts(n: int) -> list[list[int]]:
    return [[3 + (7 * i + j) % 500 for j in range(5 + 3 * i)] for i in range(n)]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


async def drain(front: AsyncLLMEngine, prompt, params) -> list:
    outs = [out async for out in front.generate({"prompt_token_ids": prompt}, params)]
    return outs


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def llm_and_reference(tiny_llama_dir):
    llm = make_llm(tiny_llama_dir)
    ref = [o.outputs[0].token_ids for o in llm.generate(prompts(6), GREEDY, use_tqdm=False)]
    yield llm, ref
    llm.close()


def test_concurrent_streams_match_offline_generate(llm_and_reference):
    llm, ref = llm_and_reference

    async def main():
        front = AsyncLLMEngine(llm.llm_engine)
        front.start()
        try:
            results = await asyncio.gather(*(drain(front, p, GREEDY) for p in prompts(6)))
        finally:
            await front.shutdown(release_engine=False)   # the next test reuses the engine
        return results

    results = run(main())
    for outs, expected in zip(results, ref):
        # Cumulative outputs: token lists only grow, the last one is finished and complete.
        lengths = [len(o.outputs[0].token_ids) for o in outs]
        assert lengths == sorted(lengths) and outs[-1].finished
        assert all(not o.finished for o in outs[:-1])
        assert outs[-1].outputs[0].token_ids == expected


def test_abort_frees_blocks_and_queue_bound(llm_and_reference):
    llm, _ = llm_and_reference
    long = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)

    async def main():
        timings = []
        front = AsyncLLMEngine(llm.llm_engine, max_queue=1, on_output=timings.extend)
        front.start()
        try:
            first = front.add_request("a", None, prompts(1)[0], front.prepare_params(long))
            # "a" has no token yet, so it fills the bounded queue: the next add fails at once.
            with pytest.raises(QueueFullError):
                front.add_request("b", None, prompts(1)[0], front.prepare_params(long))
            out = await first.__anext__()
            assert len(out.outputs[0].token_ids) >= 1 and front.stats()["num_queued"] == 0
            second = front.add_request("b", None, prompts(2)[1], front.prepare_params(long))
            await second.__anext__()
            await wait_until(lambda: front.stats()["kv_cache_usage"] > 0 and front.stats()["num_running"] == 2)
            first.abort()
            second.abort()
            with pytest.raises(EngineStoppedError):
                await first.__anext__()
            await wait_until(lambda: front.stats()["kv_cache_usage"] == 0 and front.stats()["num_running"] == 0)
            assert not llm.llm_engine.has_unfinished_requests()
            assert llm.llm_engine.scheduler.kv.num_free_blocks == llm.llm_engine.scheduler.kv.num_blocks
        finally:
            await front.shutdown(release_engine=False)
        return timings

    timings = run(main())
    ttfts = [t for t in timings if t.time_to_first_token is not None]
    assert {t.request_id for t in ttfts} == {"a", "b"} and all(t.time_to_first_token > 0 for t in ttfts)
    assert all(t.inter_token_latency is None or t.inter_token_latency > 0 for t in timings)


def wrap_step(engine, before_step) -> None:
    """Run ``before_step(call number)`` ahead of every engine step (to slow it down or break it)."""
    real_step, calls = engine.step, []

    def step():
        calls.append(1)
        before_step(len(calls))
        return real_step()

    engine.step = step


def test_shutdown_drains_then_aborts_and_releases_engine(tiny_llama_dir):
    llm = make_llm(tiny_llama_dir)
    engine = llm.llm_engine
    wrap_step(engine, lambda _: time.sleep(0.02))   # the long request needs > 5 s, the short one ~0.25 s

    async def main():
        front = AsyncLLMEngine(engine)
        front.start()
        short = front.add_request("short", None, prompts(1)[0], front.prepare_params(GREEDY))
        forever = front.add_request("long", None, prompts(2)[1],
                                    front.prepare_params(SamplingParams(temperature=0, max_tokens=5000,
                                                                        ignore_eos=True)))
        await forever.__anext__()
        # The short one finishes within the drain time; the long one is aborted when it runs out.
        await front.shutdown(drain_timeout=1.5)
        outs = [o async for o in short]
        assert outs and outs[-1].finished and len(outs[-1].outputs[0].token_ids) == 12
        with pytest.raises(EngineStoppedError):
            async for _ in forever:
                pass
        assert not front._thread.is_alive() and engine.executor is None
        with pytest.raises(EngineStoppedError):
            front.add_request("late", None, [5], front.prepare_params(GREEDY))

    run(main())
    llm.close()


def fail_after(engine, n_ok: int) -> None:
    """Make the engine's step raise after ``n_ok`` good steps (a stand-in for a dying worker)."""
    def check(call: int) -> None:
        if call > n_ok:
            raise RuntimeError("simulated worker crash")

    wrap_step(engine, check)


def test_failing_step_fails_every_stream_without_hanging(tiny_llama_dir):
    llm = make_llm(tiny_llama_dir)
    fail_after(llm.llm_engine, 3)

    async def main():
        front = AsyncLLMEngine(llm.llm_engine)
        front.start()
        results = await asyncio.gather(*(drain(front, p, SamplingParams(max_tokens=100, ignore_eos=True))
                                         for p in prompts(4)), return_exceptions=True)
        assert all(isinstance(r, EngineDeadError) for r in results), results
        assert "simulated worker crash" in str(front.error)
        with pytest.raises(EngineDeadError):
            front.add_request("x", None, [5], front.prepare_params(GREEDY))
        await front.shutdown()

    run(main())
    llm.close()


def test_server_reports_engine_death(tiny_llama_dir):
    """The HTTP side of a dead engine: the stream ends with an error event, /health turns 503, new
    requests get 503. uvicorn runs in a thread on a port the OS picks."""
    uvicorn = pytest.importorskip("uvicorn")
    from pagedawq.entrypoints.openai.app import build_app

    llm = make_llm(tiny_llama_dir)
    fail_after(llm.llm_engine, 3)
    app = build_app(AsyncLLMEngine(llm.llm_engine), ["tiny"])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (server.started and server.servers):
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
            assert client.get("/health").status_code == 200
            body = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 50, "ignore_eos": True, "stream": True}
            with client.stream("POST", "/v1/completions", json=body) as resp:
                assert resp.status_code == 200
                events = [line for line in resp.iter_lines() if line.startswith("data: ")]
            assert events[-1] == "data: [DONE]"
            assert '"code":"engine_dead"' in events[-2]
            health = client.get("/health")
            assert health.status_code == 503 and health.json()["error"]["code"] == "engine_dead"
            again = client.post("/v1/completions", json={**body, "stream": False})
            assert again.status_code == 503 and "simulated worker crash" in again.json()["error"]["message"]
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        llm.close()
    assert not thread.is_alive()
