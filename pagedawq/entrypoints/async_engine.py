"""``AsyncLLMEngine``: the synchronous :class:`LLMEngine` driven from asyncio code.

``LLMEngine.step()`` is CPU/GPU-bound and blocks for a whole forward, so it cannot run on the event
loop that serves HTTP. One background thread owns the engine: it is the only thread that mutates
the scheduler. Async callers never touch the engine directly; they post commands (add, abort,
stop) to a thread-safe queue, which the thread applies between steps. After every step the thread
hands the outputs to the event loop with ``loop.call_soon_threadsafe``, where each request's
:class:`RequestStream` wakes its consumer.

Outputs are cumulative (each ``RequestOutput`` holds the whole text so far), so a stream keeps only
the newest one: a slow consumer skips intermediate outputs instead of queueing them, and nothing
is lost.

If a step raises, the engine is considered dead: every in-flight stream gets an
:class:`EngineDeadError`, new requests are refused, and :attr:`AsyncLLMEngine.error` says why.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from pagedawq.engine.llm_engine import LLMEngine, PromptType
from pagedawq.errors import EngineDeadError, PagedAWQError
from pagedawq.outputs import RequestOutput
from pagedawq.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


class QueueFullError(PagedAWQError, RuntimeError):
    """Too many requests are waiting for their first token; the caller should retry later."""


class EngineStoppedError(PagedAWQError, RuntimeError):
    """The engine is shutting down and takes no new requests; in-flight ones get this if aborted."""


@dataclass(frozen=True)
class OutputTiming:
    """What one step did for one request, for metrics (times in seconds, monotonic clock)."""
    request_id: str
    num_prompt_tokens: int
    num_new_tokens: int            # generated tokens this step, over all of the request's sequences
    time_to_first_token: float | None  # set on the step that produced the first token
    inter_token_latency: float | None  # time since the request's previous token-producing step
    finished: bool
    finish_reasons: tuple[str, ...]   # one per sequence, when finished
    e2e_latency: float | None         # arrival to finish, when finished


@dataclass
class _Tracked:
    """Engine-thread bookkeeping of one request, for :class:`OutputTiming`."""
    arrival: float
    num_prompt_tokens: int
    num_tokens: int = 0
    last_token_time: float | None = None


class RequestStream:
    """The outputs of one request, as an async iterator of cumulative ``RequestOutput``.

    Iteration ends after the output with ``finished=True``; it raises if the engine failed or the
    request was aborted by shutdown. Call :meth:`abort` (idempotent) when the consumer goes away
    early, so the request's KV blocks are freed.
    """

    def __init__(self, request_id: str, owner: "AsyncLLMEngine") -> None:
        self.request_id = request_id
        self._owner = owner
        self._latest: RequestOutput | None = None
        self._error: BaseException | None = None
        self._done = False          # the producer side is over (finished output or error)
        self._consumed = False      # the consumer has seen the end
        self._ready = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self._done

    def _put(self, output: RequestOutput) -> None:
        self._latest = output
        if output.finished:
            self._done = True
        self._ready.set()

    def _fail(self, error: BaseException) -> None:
        if not self._done:
            self._error, self._done = error, True
            self._ready.set()

    def abort(self) -> None:
        """Stop generating this request (no-op once it finished)."""
        if not self._done:
            self._done, self._latest = True, None
            self._error = EngineStoppedError(f"request {self.request_id} was aborted")
            self._owner.abort(self.request_id)
            self._ready.set()

    def __aiter__(self) -> "RequestStream":
        return self

    async def __anext__(self) -> RequestOutput:
        while True:
            if self._latest is not None:
                out, self._latest = self._latest, None
                return out
            if self._consumed:
                raise StopAsyncIteration
            if self._done:
                self._consumed = True
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()


_STOP = ("stop",)


class AsyncLLMEngine:
    """Steps an :class:`LLMEngine` in a background thread; add and abort requests from asyncio.

    ``max_queue`` bounds the requests that have been accepted but have not produced a token yet
    (waiting for the scheduler or in prefill); :meth:`add_request` raises :class:`QueueFullError`
    beyond it, so an overloaded server can answer 503 at once instead of queueing without limit.
    ``on_output`` (called on the engine thread; settable until :meth:`start`) receives per-step
    timings for metrics.
    """

    def __init__(self, engine: LLMEngine, max_queue: int | None = None,
                 on_output: Callable[[list[OutputTiming]], None] | None = None) -> None:
        if max_queue is not None and max_queue < 1:
            raise ValueError(f"max_queue must be >= 1 or None, got {max_queue}")
        self.engine = engine
        self.max_queue = max_queue
        self.on_output = on_output
        self._commands: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._streams: dict[str, RequestStream] = {}
        self._pending: set[str] = set()        # accepted, no output yet (the bounded queue)
        self._tracked: dict[str, _Tracked] = {}  # engine thread only
        self._stats: dict[str, float] = dict(engine.stats())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._error: BaseException | None = None
        self._idle = asyncio.Event()

    @classmethod
    def from_args(cls, model: str | None = None, *, max_queue: int | None = None,
                  on_output: Callable[[list[OutputTiming]], None] | None = None,
                  **engine_kwargs: Any) -> "AsyncLLMEngine":
        return cls(LLMEngine.from_args(model, **engine_kwargs), max_queue, on_output)

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine thread; call from the event loop that will consume the outputs."""
        if self._thread is not None:
            raise RuntimeError("the engine loop is already started")
        self._loop = asyncio.get_running_loop()
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name="pagedawq-engine", daemon=True)
        self._thread.start()

    @property
    def error(self) -> BaseException | None:
        """Why the engine loop died, or None while it is healthy."""
        return self._error

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._error is None

    async def shutdown(self, drain_timeout: float = 0.0, join_timeout: float = 30.0,
                       release_engine: bool = True) -> None:
        """Refuse new requests, let in-flight ones finish for up to ``drain_timeout`` seconds, abort
        the rest (their consumers get :class:`EngineStoppedError`), stop the thread and release the
        engine's workers. ``release_engine=False`` leaves the ``LLMEngine`` usable by its owner
        (an offline ``LLM`` sharing it, say)."""
        self._accepting = False
        if self._streams and drain_timeout > 0 and self._error is None:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), drain_timeout)
            except asyncio.TimeoutError:
                logger.warning("%d requests still running after %.1f s; aborting them",
                               len(self._streams), drain_timeout)
        for stream in list(self._streams.values()):
            stream._fail(EngineStoppedError("the server is shutting down"))
            self.abort(stream.request_id)
        if self._thread is not None:
            self._commands.put(_STOP)
            await asyncio.to_thread(self._thread.join, join_timeout)
            if self._thread.is_alive():
                logger.error("the engine thread did not stop within %.0f s", join_timeout)
        if release_engine:
            self.engine.shutdown()

    # ---- requests (event loop) ------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.engine.config.scheduler.max_model_len

    def process_prompt(self, prompt: PromptType) -> tuple[str | None, list[int]]:
        """Validate and tokenize a prompt (``LLMEngine.process_prompt`` reads only the config and
        tokenizer, so it is safe to call off the engine thread)."""
        return self.engine.process_prompt(prompt)

    def prepare_params(self, params: SamplingParams) -> SamplingParams:
        return self.engine.prepare_params(params)

    def _check_accepting(self) -> None:
        """Raise if no new request can be taken now (dead engine, shutdown, full queue)."""
        if self._error is not None:
            raise EngineDeadError(f"the engine failed and takes no requests: {self._error}")
        if not self._accepting:
            raise EngineStoppedError("the engine is not running (not started or shutting down)")
        if self.max_queue is not None and len(self._pending) >= self.max_queue:
            raise QueueFullError(f"{len(self._pending)} requests are already waiting (max_queue="
                                 f"{self.max_queue}); retry later")

    def add_request(self, request_id: str, prompt_text: str | None, prompt_token_ids: list[int],
                    params: SamplingParams, arrival_time: float | None = None) -> RequestStream:
        """Queue a request already validated by :meth:`process_prompt` / :meth:`prepare_params`.

        Raises at once (nothing queued) when the engine is dead, stopping, or the queue is full.
        """
        self._check_accepting()
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already in use")
        stream = RequestStream(request_id, self)
        self._streams[request_id] = stream
        self._pending.add(request_id)
        arrival = time.monotonic() if arrival_time is None else arrival_time
        self._commands.put(("add", request_id, prompt_text, list(prompt_token_ids), params, arrival))
        return stream

    async def generate(self, prompt: PromptType, params: SamplingParams,
                       request_id: str | None = None) -> AsyncIterator[RequestOutput]:
        """Validate, add and stream one request; leaving the loop early aborts it."""
        text, ids = self.process_prompt(prompt)
        stream = self.add_request(request_id or f"gen-{self.engine.new_request_id()}", text, ids,
                                  self.prepare_params(params))
        try:
            async for out in stream:
                yield out
        finally:
            stream.abort()

    def abort(self, request_id: str) -> None:
        """Abort a request (safe to call twice, or for a finished request)."""
        if self._streams.pop(request_id, None) is not None:
            self._pending.discard(request_id)
            self._commands.put(("abort", request_id))
            self._note_idle()

    def stats(self) -> dict[str, float]:
        """The engine's counters as of the last step, plus the front's queue and stream counts."""
        return {**self._stats, "num_queued": len(self._pending), "num_streams": len(self._streams)}

    # ---- delivery (event loop, scheduled by the engine thread) -----------------------------------
    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            self._pending.discard(out.request_id)
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue          # aborted while the step ran
            stream._put(out)
            if out.finished:
                del self._streams[out.request_id]
        self._note_idle()

    def _fail_request(self, request_id: str, error: BaseException) -> None:
        self._pending.discard(request_id)
        stream = self._streams.pop(request_id, None)
        if stream is not None:
            stream._fail(error)
        self._note_idle()

    def _fail_all(self, error: BaseException) -> None:
        for rid in list(self._streams):
            self._fail_request(rid, error)

    def _note_idle(self) -> None:
        if not self._streams:
            self._idle.set()

    def _to_loop(self, fn: Callable, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:   # the loop is closed: nobody is left to tell
            logger.debug("event loop closed; dropped a delivery")

    # ---- the engine thread ----------------------------------------------------------------------
    def _run(self) -> None:
        engine = self.engine
        try:
            while True:
                if not self._apply_commands(block=not engine.has_unfinished_requests()):
                    return
                if not engine.has_unfinished_requests():
                    self._stats = dict(engine.stats())
                    continue
                outputs = engine.step()
                now = time.monotonic()
                self._stats = dict(engine.stats())
                if outputs:
                    self._report(outputs, now)
                    self._to_loop(self._deliver, outputs)
        except BaseException as e:   # the engine's state is unknown now: fail everything, loudly
            logger.exception("the engine loop failed; failing all in-flight requests")
            error = EngineDeadError(f"engine step failed: {type(e).__name__}: {e}")
            error.__cause__ = e
            self._error = error
            self._accepting = False
            self._to_loop(self._fail_all, error)

    def _apply_commands(self, block: bool) -> bool:
        """Apply queued adds/aborts; with ``block``, wait for the first one. False on stop."""
        while True:
            try:
                cmd = self._commands.get() if block else self._commands.get_nowait()
            except queue.Empty:
                return True
            block = False
            if cmd is _STOP:
                return False
            if cmd[0] == "add":
                _, rid, text, ids, params, arrival = cmd
                try:
                    self.engine.add_processed_request(rid, text, ids, params, arrival)
                except Exception as e:  # a bad request must not take the engine down
                    logger.warning("request %s rejected by the engine: %s", rid, e)
                    self._to_loop(self._fail_request, rid, e)
                    continue
                self._tracked[rid] = _Tracked(arrival, len(ids))
            else:
                _, rid = cmd
                self.engine.abort_request(rid)
                self._tracked.pop(rid, None)

    def _report(self, outputs: list[RequestOutput], now: float) -> None:
        timings = []
        for out in outputs:
            tracked = self._tracked.get(out.request_id)
            if tracked is None:
                continue
            num_tokens = sum(len(c.token_ids) for c in out.outputs)
            new = num_tokens - tracked.num_tokens
            ttft = itl = e2e = None
            if new > 0:
                if tracked.last_token_time is None:
                    ttft = now - tracked.arrival
                else:
                    itl = now - tracked.last_token_time
                tracked.last_token_time, tracked.num_tokens = now, num_tokens
            reasons: tuple[str, ...] = ()
            if out.finished:
                del self._tracked[out.request_id]
                e2e = now - tracked.arrival
                reasons = tuple(c.finish_reason or "abort" for c in out.outputs)
            timings.append(OutputTiming(out.request_id, tracked.num_prompt_tokens, max(new, 0), ttft, itl,
                                        out.finished, reasons, e2e))
        if self.on_output is not None and timings:
            try:
                self.on_output(timings)
            except Exception:   # metrics must never stop generation
                logger.exception("the output observer failed")
