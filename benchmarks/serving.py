"""Online serving benchmark against the OpenAI-compatible server (vLLM's ``benchmark_serving``
metric names): request and output-token throughput, TTFT, TPOT, ITL and end-to-end latency.

Each configuration of the sweep sends ``--num-prompts`` streaming ``/v1/completions`` requests,
arriving as a Poisson process at ``--request-rate`` (``inf``: all at once), with at most
``--max-concurrency`` in flight. Prompts are random token ids of ``--input-len`` tokens (exact
lengths) or the lines of ``--dataset``, fresh for each configuration and its warm-up request (the
server's prefix cache would otherwise serve repeated prompts); outputs are ``--output-len`` tokens
(``ignore_eos``).

    # against a running server
    python benchmarks/serving.py --base-url http://127.0.0.1:8000 --num-prompts 64 --max-concurrency 1 4 16
    # or let it start one (any `pagedawq serve` arguments after --server-args)
    python benchmarks/serving.py --launch-server --server-args "--device cpu --max-model-len 2048" ...

Metrics, per request: TTFT = first token's arrival - send; TPOT = (E2EL - TTFT) / (output tokens
- 1); ITL = gaps between successive streamed chunks; E2EL = last byte - send.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx


@dataclass
class RequestResult:
    ok: bool = False
    error: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    e2el: float = 0.0
    itl: list[float] = field(default_factory=list)


def make_prompts(args, n: int, stream: str) -> list[str | list[int]]:
    """``n`` prompts of one configuration (``stream`` names it). Every configuration and each
    warm-up get prompts of their own, so no request finds its prompt in the server's prefix cache
    from an earlier one (the server caches prefixes by default)."""
    rng = random.Random(f"{args.seed}-{stream}")
    if args.dataset:
        with open(args.dataset, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
        if not lines:
            raise SystemExit(f"{args.dataset} has no non-empty lines")
        start = rng.randrange(len(lines))   # repeats across configurations only if the file is short
        return [lines[(start + i) % len(lines)] for i in range(n)]
    # Ids from the middle of the vocabulary: ordinary tokens, no specials.
    return [[rng.randrange(1000, 30000) for _ in range(args.input_len)] for _ in range(n)]


async def send_one(client: httpx.AsyncClient, args, model: str, prompt) -> RequestResult:
    body = {"model": model, "prompt": prompt, "max_tokens": args.output_len, "temperature": 0.0,
            "ignore_eos": args.ignore_eos, "stream": True, "stream_options": {"include_usage": True}}
    result = RequestResult()
    start = last = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                result.error = f"HTTP {resp.status_code}: {(await resp.aread()).decode()[:200]}"
                return result
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    result.error = chunk["error"]["message"]
                    return result
                now = time.perf_counter()
                if chunk.get("usage"):
                    result.prompt_tokens = chunk["usage"]["prompt_tokens"]
                    result.output_tokens = chunk["usage"]["completion_tokens"]
                if any(c.get("text") for c in chunk["choices"]):
                    if result.ttft == 0.0:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
        result.e2el = time.perf_counter() - start
        result.ok = result.output_tokens > 0
        if not result.ok:
            result.error = "no tokens generated"
    except (httpx.HTTPError, json.JSONDecodeError, KeyError) as e:
        result.error = f"{type(e).__name__}: {e}"
    return result


async def run_config(args, model: str, prompts: list, warmup, rate: float, concurrency: int | None) -> dict:
    rng = random.Random(args.seed)
    limits = httpx.Limits(max_connections=concurrency or len(prompts), max_keepalive_connections=concurrency or 100)
    sem = asyncio.Semaphore(concurrency or len(prompts))
    async with httpx.AsyncClient(base_url=args.base_url, timeout=httpx.Timeout(args.timeout),
                                 headers=args.headers, limits=limits) as client:
        async def limited(prompt) -> RequestResult:
            async with sem:
                return await send_one(client, args, model, prompt)

        await send_one(client, args, model, warmup)   # warm-up, not measured
        tasks = []
        start = time.perf_counter()
        for prompt in prompts:
            tasks.append(asyncio.create_task(limited(prompt)))
            if not math.isinf(rate):
                await asyncio.sleep(rng.expovariate(rate))
        results = await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    return summarize(results, duration, rate, concurrency)


def _stats(name: str, values_s: list[float]) -> dict:
    ms = sorted(v * 1000 for v in values_s) or [float("nan")]
    p99 = ms[min(len(ms) - 1, math.ceil(0.99 * len(ms)) - 1)]
    return {f"mean_{name}_ms": statistics.fmean(ms), f"median_{name}_ms": statistics.median(ms),
            f"p99_{name}_ms": p99}


def summarize(results: list[RequestResult], duration: float, rate: float, concurrency: int | None) -> dict:
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    tpot = [(r.e2el - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    summary = {"request_rate": rate, "max_concurrency": concurrency, "completed": len(ok),
               "failed": len(results) - len(ok), "duration_s": duration, "total_input_tokens": in_tokens,
               "total_output_tokens": out_tokens, "request_throughput": len(ok) / duration,
               "output_throughput": out_tokens / duration, "total_token_throughput": (in_tokens + out_tokens) / duration,
               **_stats("ttft", [r.ttft for r in ok]), **_stats("tpot", tpot),
               **_stats("itl", [x for r in ok for x in r.itl]), **_stats("e2el", [r.e2el for r in ok])}
    errors = sorted({r.error for r in results if not r.ok})
    if errors:
        summary["errors"] = errors[:5]
    return summary


COLUMNS = [("max_concurrency", "conc", "{}"), ("request_rate", "rate", "{}"), ("completed", "done", "{}"),
           ("request_throughput", "req/s", "{:.2f}"), ("output_throughput", "out tok/s", "{:.1f}"),
           ("mean_ttft_ms", "TTFT mean", "{:.0f}"), ("median_ttft_ms", "TTFT med", "{:.0f}"),
           ("p99_ttft_ms", "TTFT p99", "{:.0f}"), ("mean_tpot_ms", "TPOT mean", "{:.1f}"),
           ("median_tpot_ms", "TPOT med", "{:.1f}"), ("p99_tpot_ms", "TPOT p99", "{:.1f}"),
           ("mean_itl_ms", "ITL mean", "{:.1f}"), ("median_itl_ms", "ITL med", "{:.1f}"),
           ("p99_itl_ms", "ITL p99", "{:.1f}")]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(c[1] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def launched_server(server_args: str, startup_timeout: float):
    """``pagedawq serve`` on a free loopback port for the duration of the benchmark."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "pagedawq", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", *shlex.split(server_args)]
    proc = subprocess.Popen(cmd)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base_url + "/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"server not healthy after {startup_timeout} s")
            time.sleep(0.5)
        yield base_url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--launch-server", action="store_true", help="start `pagedawq serve` (ignores --base-url)")
    parser.add_argument("--server-args", default="", help="arguments for the launched server")
    parser.add_argument("--model", default=None, help="model name (default: the server's first)")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--request-rate", type=float, nargs="+", default=[math.inf],
                        help="requests/s of the Poisson arrivals (inf: all at t=0); several values sweep")
    parser.add_argument("--max-concurrency", type=int, nargs="+", default=[0],
                        help="most requests in flight (0: unlimited); several values sweep")
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--dataset", default=None, help="text file: one prompt per non-empty line")
    parser.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                        help="let EOS end outputs early (default: exactly --output-len tokens)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0, help="per-request timeout (s)")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--result-file", default=None, help="write the summaries as JSON")
    args = parser.parse_args()
    args.headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}

    with contextlib.ExitStack() as stack:
        if args.launch_server:
            args.base_url = stack.enter_context(launched_server(args.server_args, args.startup_timeout))
        model = args.model or httpx.get(args.base_url + "/v1/models", headers=args.headers,
                                        timeout=30).json()["data"][0]["id"]
        rows = []
        for concurrency in args.max_concurrency:
            for rate in args.request_rate:
                name = f"c{concurrency}-r{rate}"
                prompts = make_prompts(args, args.num_prompts, name)
                warmup = make_prompts(args, 1, f"{name}-warmup")[0]
                row = asyncio.run(run_config(args, model, prompts, warmup, rate, concurrency or None))
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(markdown_table(rows))
    if args.result_file:
        with open(args.result_file, "w") as f:
            json.dump({"date": datetime.now(timezone.utc).isoformat(), "model": model, "args": sys.argv[1:],
                       "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
