"""The real ``pagedawq serve`` process (default model, CPU) driven by the official ``openai`` client.

Two servers, each a subprocess on a free 127.0.0.1 port: an open one for correctness, errors and a
bounded load test, and one with ``--api-key``, ``--max-num-seqs 1`` and ``--max-queue 1`` for
authentication, the queue bound and graceful shutdown. Every wait is bounded in time.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from pagedawq import SamplingParams

MODEL = "smollm2-135m-instruct"
ENGINE_ARGS = ["--device", "cpu", "--dtype", "float32", "--max-model-len", "2048",
               "--kv-cache-memory-bytes", str(256 * 2**20)]
STARTUP_TIMEOUT = 180.0
REQUEST_TIMEOUT = 120.0
API_KEY = "test-secret-key"
# uvicorn re-raises a captured SIGTERM once its graceful shutdown is done, so a clean stop exits
# by that signal (or 0 if it already exited on its own).
CLEAN_EXIT = (0, -signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``python -m pagedawq serve`` subprocess; output goes to a file (a full pipe would block it)."""

    def __init__(self, extra_args: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = [sys.executable, "-m", "pagedawq", "serve", MODEL, "--host", "127.0.0.1", "--port", str(self.port),
               *ENGINE_ARGS, *extra_args]
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._wait_healthy()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"server not healthy after {STARTUP_TIMEOUT} s:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def client(self, api_key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=api_key, max_retries=0, timeout=REQUEST_TIMEOUT)

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url + "/v1", api_key="unused", max_retries=0,
                                  timeout=REQUEST_TIMEOUT)

    def metrics(self) -> dict[str, float]:
        text = httpx.get(self.base_url + "/metrics", timeout=10).text
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def wait_idle(self, timeout: float = 20.0) -> dict[str, float]:
        """Poll /metrics until nothing runs and no KV block is held (aborts are asynchronous)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if m["pagedawq_num_requests_running"] == 0 and m["pagedawq_num_requests_waiting"] == 0 \
                    and m["pagedawq_kv_cache_usage"] == 0:
                return m
            assert time.monotonic() < deadline, f"server still busy: {m}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(["--served-model-name", MODEL, "alias"], tmp_path_factory.mktemp("server") / "server.log")
    yield srv
    assert srv.stop() in CLEAN_EXIT, srv.log()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    srv = Server(["--api-key", API_KEY, "--max-num-seqs", "1", "--max-queue", "1"],
                 tmp_path_factory.mktemp("keyed") / "server.log")
    yield srv
    srv.stop()


def stream_completion(client: openai.OpenAI, **kw) -> tuple[dict[int, str], dict[int, str | None], list]:
    """Texts and finish reasons per choice index, and the raw chunks."""
    texts, reasons, chunks = {}, {}, []
    for chunk in client.completions.create(stream=True, **kw):
        chunks.append(chunk)
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            if c.finish_reason:
                reasons[c.index] = c.finish_reason
    return texts, reasons, chunks


def stream_chat(client: openai.OpenAI, **kw) -> tuple[str, str | None, list]:
    text, reason, chunks = "", None, []
    for chunk in client.chat.completions.create(stream=True, **kw):
        chunks.append(chunk)
        for c in chunk.choices:
            text += c.delta.content or ""
            reason = c.finish_reason or reason
    return text, reason, chunks


# ---- correctness against the offline LLM ------------------------------------------------------

def test_models_health_and_metrics_format(server):
    assert httpx.get(server.base_url + "/health").json() == {"status": "ok"}
    client = server.client()
    assert [m.id for m in client.models.list().data] == [MODEL, "alias"]
    assert client.completions.create(model="alias", prompt="Hi", max_tokens=1).model == "alias"
    metrics = httpx.get(server.base_url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE pagedawq_time_to_first_token_seconds histogram" in metrics.text
    assert "# TYPE pagedawq_generation_tokens_total counter" in metrics.text


@pytest.mark.parametrize("sampling", [
    dict(temperature=0.0),
    dict(temperature=0.8, top_p=0.9, seed=1234, presence_penalty=0.5, frequency_penalty=0.7),
], ids=["greedy", "seeded-penalties"])
def test_completion_matches_llm_generate_streamed_or_not(server, default_llm, sampling):
    prompt = "The capital of France is"
    expected = default_llm.generate(prompt, SamplingParams(max_tokens=16, **sampling), use_tqdm=False)[0]
    client = server.client()
    resp = client.completions.create(model=MODEL, prompt=prompt, max_tokens=16, **sampling)
    assert resp.choices[0].text == expected.outputs[0].text
    assert resp.choices[0].finish_reason == expected.outputs[0].finish_reason
    assert resp.usage.prompt_tokens == len(expected.prompt_token_ids)
    assert resp.usage.completion_tokens == len(expected.outputs[0].token_ids)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    texts, reasons, chunks = stream_completion(client, model=MODEL, prompt=prompt, max_tokens=16,
                                               stream_options={"include_usage": True}, **sampling)
    assert texts == {0: resp.choices[0].text} and reasons == {0: resp.choices[0].finish_reason}
    assert len(chunks) > 3   # really streamed, not one blob
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == resp.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])


def test_tensor_parallel_server_matches_one_device(tmp_path, default_llm):
    """``serve --tensor-parallel-size 3`` (Ray workers, gloo; the default model's 9/3 heads split
    over 3 ranks) streams the same greedy text as the one-device engine."""
    pytest.importorskip("ray")
    srv = Server(["--tensor-parallel-size", "3"], tmp_path / "server.log")
    try:
        prompt = "The capital of France is"
        expected = default_llm.generate(prompt, SamplingParams(max_tokens=12, temperature=0), use_tqdm=False)[0]
        texts, reasons, _ = stream_completion(srv.client(), model=MODEL, prompt=prompt, max_tokens=12, temperature=0)
        assert texts == {0: expected.outputs[0].text} and reasons == {0: expected.outputs[0].finish_reason}
        srv.wait_idle()
    finally:
        # Ray's driver turns SIGTERM into sys.exit(15), which uvicorn's re-raise then reaches.
        assert srv.stop() in (*CLEAN_EXIT, signal.SIGTERM), srv.log()


def test_chat_matches_llm_chat_streamed_or_not(server, default_llm):
    messages = [{"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": "Name three colors."}]
    expected = default_llm.chat(messages, SamplingParams(temperature=0, max_tokens=20), use_tqdm=False)[0]
    client = server.client()
    resp = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0)
    assert resp.object == "chat.completion" and resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == expected.outputs[0].text
    assert resp.usage.prompt_tokens == len(expected.prompt_token_ids)
    assert resp.usage.completion_tokens == len(expected.outputs[0].token_ids)
    text, reason, chunks = stream_chat(client, model=MODEL, messages=messages, max_tokens=20, temperature=0,
                                       stream_options={"include_usage": True})
    assert text == resp.choices[0].message.content and reason == resp.choices[0].finish_reason
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.model_dump() == resp.usage.model_dump()


def test_n_stop_and_several_prompts_stream_like_non_stream(server):
    kw = dict(model=MODEL, prompt=["Once upon a time", "The best way to learn is"], n=2, max_tokens=20,
              temperature=1.0, seed=7, stop=[".", "\n"])
    client = server.client()
    resp = client.completions.create(**kw)
    assert sorted(c.index for c in resp.choices) == [0, 1, 2, 3]
    full = {c.index: c.text for c in resp.choices}
    assert all("." not in t and "\n" not in t for t in full.values())
    texts, reasons, _ = stream_completion(client, **kw)
    assert texts == full
    assert reasons == {c.index: c.finish_reason for c in resp.choices}
    # The two samples of a prompt use seeds 7 and 8: the same request again gives the same texts.
    assert {c.index: c.text for c in client.completions.create(**kw).choices} == full


def test_logprobs(server):
    client = server.client()
    resp = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0,
                                     logprobs=3)
    lp = resp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == resp.usage.completion_tokens
    assert "".join(lp.tokens) == resp.choices[0].text
    for sampled, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert sampled <= 0 and 1 <= len(top) <= 4
        assert sampled == pytest.approx(max(top.values()))   # greedy picks the most likely token
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    _, _, chunks = stream_completion(client, model=MODEL, prompt="The capital of France is", max_tokens=8,
                                     temperature=0, logprobs=3)
    assert [t for ch in chunks for c in ch.choices if c.logprobs for t in c.logprobs.tokens] == lp.tokens

    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                          max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
        assert bytes(entry.bytes).decode() == entry.token


# ---- bad requests -----------------------------------------------------------------------------

BAD_REQUESTS = [
    ("/v1/completions", b'{"model": "x", "prompt": ', 400, "invalid_json", None),
    ("/v1/completions", b'["not", "an", "object"]', 400, "invalid_json", None),
    ("/v1/completions", {"model": "gpt-4", "prompt": "hi"}, 404, "model_not_found", "model"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": -3}, 400, None, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": "5"}, 400, None, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "temperature": "hot"}, 400, None, "temperature"),
    ("/v1/completions", {"prompt": 42}, 400, "invalid_type", "prompt"),
    ("/v1/completions", {"prompt": ""}, 400, None, "prompt"),
    ("/v1/completions", {"prompt": [10**7]}, 400, None, "prompt"),
    ("/v1/completions", {"prompt": [100] * 2100}, 400, "context_length_exceeded", "prompt"),
    ("/v1/completions", {"prompt": [100] * 2000, "max_tokens": 100}, 400, "context_length_exceeded", "prompt"),
    ("/v1/completions", {"prompt": "hi", "frobnicate": True}, 400, "extra_forbidden", "frobnicate"),
    ("/v1/completions", {"prompt": "hi", "n": 0}, 400, None, "n"),
    ("/v1/completions", {"prompt": "hi", "stream_options": {"include_usage": True}}, 400, None, None),
    ("/v1/chat/completions", {"messages": []}, 400, None, "messages"),
    ("/v1/chat/completions", {"messages": "hello"}, 400, None, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 400, None, "messages.0.role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, 400, None, None),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, None,
     "max_tokens"),
]


def test_bad_requests_get_openai_errors_and_never_reach_the_engine(server):
    before = server.metrics()
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for path, body, status, code, param in BAD_REQUESTS:
            kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
            resp = http.post(path, headers={"content-type": "application/json"}, **kwargs)
            assert resp.status_code == status, (body, resp.text)
            error = resp.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"], error
            assert error["param"] == param, (body, error)
            if code is not None:
                assert error["code"] == code, (body, error)
        wrong_method = http.get("/v1/completions")
        assert wrong_method.status_code == 405 and "error" in wrong_method.json()
        assert http.get("/v1/nope").json()["error"]["type"] == "not_found_error"
    after = server.metrics()
    for name in ("pagedawq_prompt_tokens_total", "pagedawq_prefix_cache_queries_total",
                 "pagedawq_generation_tokens_total"):
        assert after[name] == before[name], name
    # The official client maps them to its exception classes, and the server keeps serving.
    client = server.client()
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="hi")
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=-1)
    ok = client.completions.create(model=MODEL, prompt="hi", max_tokens=3, temperature=0)
    assert ok.usage.completion_tokens >= 1


# ---- load: concurrency, token accounting, disconnects ----------------------------------------

async def _stream_one(client: openai.AsyncOpenAI, prompt: list[int], max_tokens: int, disconnect: bool) -> dict:
    stream = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                             logprobs=0, stream=True, stream_options={"include_usage": True},
                                             extra_body={"ignore_eos": True})
    tokens, usage, reason = 0, None, None
    async with stream:
        async for chunk in stream:
            for c in chunk.choices:
                tokens += len(c.logprobs.tokens) if c.logprobs else 0
                reason = c.finish_reason or reason
            usage = chunk.usage or usage
            if disconnect and tokens:
                break       # leaving the context closes the HTTP response mid-stream
    return {"tokens": tokens, "usage": usage, "reason": reason}


def test_load_concurrent_streams_account_tokens_and_free_blocks(server):
    rng = random.Random(0)
    n_clients = 16
    base = server.wait_idle()

    async def wave(disconnect_every: int | None) -> tuple[list, list]:
        client = server.async_client()
        jobs = []
        for i in range(n_clients):
            cut = disconnect_every is not None and i % disconnect_every == 0
            prompt = [rng.randrange(100, 30000) for _ in range(rng.randint(1, 16))]
            jobs.append((prompt, 1000 if cut else rng.randint(1, 16), cut))
        try:
            results = await asyncio.wait_for(asyncio.gather(*(_stream_one(client, *job) for job in jobs)), 150)
        finally:
            await client.close()
        return jobs, results

    # Wave 1: every client reads to the end; every token is accounted for.
    jobs, results = asyncio.run(wave(None))
    for (prompt, max_tokens, _), r in zip(jobs, results):
        assert r["reason"] == "length" and r["tokens"] == max_tokens
        assert (r["usage"].prompt_tokens, r["usage"].completion_tokens) == (len(prompt), max_tokens)
    m1 = server.wait_idle()
    assert m1["pagedawq_generation_tokens_total"] - base["pagedawq_generation_tokens_total"] == \
        sum(j[1] for j in jobs)
    assert m1["pagedawq_prompt_tokens_total"] - base["pagedawq_prompt_tokens_total"] == sum(len(j[0]) for j in jobs)
    assert m1['pagedawq_request_success_total{finished_reason="length"}'] - \
        base.get('pagedawq_request_success_total{finished_reason="length"}', 0) == n_clients
    assert m1["pagedawq_time_to_first_token_seconds_count"] - base["pagedawq_time_to_first_token_seconds_count"] \
        == n_clients

    # Wave 2: half the clients hang up after their first token, asking for 1000 tokens; their
    # requests must be aborted (never finish) and give their KV blocks back.
    jobs, results = asyncio.run(wave(2))
    for (_, max_tokens, cut), r in zip(jobs, results):
        if cut:
            assert r["reason"] is None and 1 <= r["tokens"] < max_tokens
        else:
            assert r["reason"] == "length" and r["tokens"] == max_tokens
    m2 = server.wait_idle()
    finished = m2['pagedawq_request_success_total{finished_reason="length"}'] - \
        m1['pagedawq_request_success_total{finished_reason="length"}']
    assert finished == n_clients // 2
    assert m2["pagedawq_generation_tokens_total"] - m1["pagedawq_generation_tokens_total"] < 8 * 1000 / 4


# ---- API key, queue bound, graceful shutdown ---------------------------------------------------

def test_api_key_required_on_v1_only(keyed_server):
    with pytest.raises(openai.AuthenticationError):
        keyed_server.client("wrong-key").models.list()
    resp = httpx.post(keyed_server.base_url + "/v1/completions", json={"prompt": "hi"})
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    resp = httpx.post(keyed_server.base_url + "/v1/completions", json={"prompt": "hi"},
                      headers={"Authorization": "Basic " + API_KEY})
    assert resp.status_code == 401
    assert httpx.get(keyed_server.base_url + "/health").status_code == 200
    assert httpx.get(keyed_server.base_url + "/metrics").status_code == 200
    out = keyed_server.client(API_KEY).completions.create(model=MODEL, prompt="hi", max_tokens=2, temperature=0)
    assert out.usage.completion_tokens >= 1


def test_queue_bound_answers_503(keyed_server):
    client = keyed_server.client(API_KEY)
    long = dict(model=MODEL, max_tokens=1000, stream=True, extra_body={"ignore_eos": True})
    # A takes the only running slot (--max-num-seqs 1) and has its first token...
    first = client.completions.create(prompt="Tell me a long story.", **long)
    it = iter(first)
    assert next(it).choices[0].text
    # ...so B waits for the scheduler and fills the queue (--max-queue 1)...
    with httpx.Client(base_url=keyed_server.base_url, timeout=30,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        with http.stream("POST", "/v1/completions", json={"prompt": "Another story.", "max_tokens": 1000,
                                                          "ignore_eos": True, "stream": True}) as second:
            assert second.status_code == 200
            # ...and C is refused at once.
            with pytest.raises(openai.InternalServerError) as refused:
                client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
            assert refused.value.status_code == 503
            assert refused.value.body["code"] == "queue_full"
    first.close()
    keyed_server.wait_idle()
    assert client.completions.create(model=MODEL, prompt="hi", max_tokens=2).usage.completion_tokens >= 1


def test_graceful_shutdown_finishes_in_flight_stream(keyed_server):
    client = keyed_server.client(API_KEY)
    stream = client.completions.create(model=MODEL, prompt="Count to twenty:", max_tokens=20, temperature=0,
                                       stream=True, stream_options={"include_usage": True},
                                       extra_body={"ignore_eos": True})
    it = iter(stream)
    text = next(it).choices[0].text
    keyed_server.proc.send_signal(signal.SIGTERM)
    reason, usage = None, None
    for chunk in it:
        for c in chunk.choices:
            text += c.text
            reason = c.finish_reason or reason
        usage = chunk.usage or usage
    assert reason == "length" and usage.completion_tokens == 20 and text
    assert keyed_server.proc.wait(60) in CLEAN_EXIT
    assert "Application shutdown complete" in keyed_server.log()
    with pytest.raises(httpx.ConnectError):
        httpx.get(keyed_server.base_url + "/health", timeout=5)
