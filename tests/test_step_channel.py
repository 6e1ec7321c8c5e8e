"""The driver-to-worker step channel: replies come back in rank order, a worker's exception, a
worker's death and a stuck worker all end the driver's wait with EngineDeadError (an error the user
can act on is raised as itself), and a stranger without the token cannot take a rank's place."""
from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from pagedawq.engine.executor import step_channel
from pagedawq.engine.executor.step_channel import STOP, DriverChannel, serve_worker
from pagedawq.errors import EngineDeadError, ModelFilesError


_UNSTICK = threading.Event()   # releases the ranks a test left stuck


class _UnpicklableFilesError(ModelFilesError):
    def __init__(self, message: str, handle) -> None:   # two arguments: pickle cannot rebuild it
        super().__init__(message)
        self.handle = handle


def _handler(rank: int):
    def handle(method, *args, **kwargs):
        if method == "boom" and rank == 0:   # one rank fails, the other answers normally
            raise ValueError(f"rank {rank} exploded")
        if method == "user_error" and rank == 1:
            raise ModelFilesError("no weights in /nowhere") if not args else _UnpicklableFilesError("x", args[0])
        if method == "stick" and rank in args[0]:   # these ranks never answer (until released)
            _UNSTICK.wait()
        if method in ("echo", "boom", "stick", "user_error"):
            return (rank, args, kwargs)
        raise AttributeError(method)
    return handle


def _start(world: int, token: str = "secret"):
    chan = DriverChannel(world, "127.0.0.1", token)
    threads = [threading.Thread(target=serve_worker, args=(chan.address, r, token, _handler(r)), daemon=True)
               for r in range(world)]
    for t in threads:
        t.start()
    chan.accept_all(timeout_s=10, still_starting=lambda: None)
    return chan, threads


def _call(chan, method, args=(), kwargs=None, ranks=(0, 1)):
    chan.broadcast((method, args, kwargs or {}, ranks))
    return chan.gather(ranks, check_alive=lambda: None)


def test_replies_in_rank_order_and_only_from_asked_ranks():
    chan, threads = _start(2)
    try:
        assert _call(chan, "echo", (1, "a"), {"k": 2}) == {0: (0, (1, "a"), {"k": 2}), 1: (1, (1, "a"), {"k": 2})}
        assert _call(chan, "echo", (7,), ranks=(0,)) == {0: (0, (7,), {})}
        # Rank 1 stayed silent above, so the next reply read from it belongs to the next command.
        assert _call(chan, "echo", (8,), ranks=(1,)) == {1: (1, (8,), {})}
    finally:
        chan.broadcast((STOP, (), {}, ()))
        chan.close()
    for t in threads:
        t.join(5)
        assert not t.is_alive()


def test_worker_exception_surfaces_with_its_traceback():
    chan, _ = _start(2)
    try:
        with pytest.raises(EngineDeadError, match="(?s)Traceback.*rank 0 exploded"):
            _call(chan, "boom", ranks=(0, 1))
    finally:
        chan.broadcast((STOP, (), {}, ()))
        chan.close()


def test_an_error_the_user_can_act_on_is_raised_as_itself_with_the_rank_and_traceback():
    """As with one process: a rank's ModelFilesError reaches the caller as a ModelFilesError (its
    rank and traceback in a note), not as a dead engine; one that cannot be pickled comes as text."""
    chan, _ = _start(2)
    try:
        with pytest.raises(ModelFilesError, match="no weights in /nowhere") as info:
            _call(chan, "user_error")
        assert not isinstance(info.value, EngineDeadError)
        assert "raised by tensor-parallel rank 1" in info.value.__notes__[0] and "Traceback" in info.value.__notes__[0]
        with pytest.raises(EngineDeadError, match="(?s)rank 1 failed:.*_UnpicklableFilesError"):
            _call(chan, "user_error", (5,))
    finally:
        chan.broadcast((STOP, (), {}, ()))
        chan.close()


@pytest.mark.parametrize("stuck", [(1,), (0, 1)])
def test_a_stuck_rank_is_an_error_not_a_hang(monkeypatch, stuck):
    """A rank silent long after its peer answered (a kernel waiting for ever on the device), or
    no answer at all, ends the wait with an error naming the rank and the command."""
    monkeypatch.setattr(step_channel, "STRAGGLER_TIMEOUT_S", 1.0)
    monkeypatch.setattr(step_channel, "COMMAND_TIMEOUT_S", 3.0)
    _UNSTICK.clear()
    chan, threads = _start(2)
    try:
        start = time.monotonic()
        limit = "within 1 s of rank" if len(stuck) == 1 else "within 3 s"
        with pytest.raises(EngineDeadError, match=rf"rank\(s\) \{list(stuck)}\ did not answer 'stick' {limit}.*stuck"):
            chan.broadcast(("stick", (stuck,), {}, (0, 1)))
            chan.gather((0, 1), check_alive=lambda: None, command="'stick'")
        assert time.monotonic() - start < 10
    finally:
        _UNSTICK.set()
        chan.broadcast((STOP, (), {}, ()))
        chan.close()
    for t in threads:
        t.join(5)
        assert not t.is_alive()


def test_time_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("PAGEDAWQ_STRAGGLER_TIMEOUT_S", "12.5")
    assert step_channel.seconds_from_env("PAGEDAWQ_STRAGGLER_TIMEOUT_S", 300.0) == 12.5
    monkeypatch.delenv("PAGEDAWQ_STRAGGLER_TIMEOUT_S")
    assert step_channel.seconds_from_env("PAGEDAWQ_STRAGGLER_TIMEOUT_S", 300.0) == 300.0
    for bad in ("ten", "0", "-5", "nan"):
        monkeypatch.setenv("PAGEDAWQ_COMMAND_TIMEOUT_S", bad)
        with pytest.raises(ValueError, match="PAGEDAWQ_COMMAND_TIMEOUT_S must be a positive number of seconds"):
            step_channel.seconds_from_env("PAGEDAWQ_COMMAND_TIMEOUT_S", 1800.0)


def test_error_of_a_rank_not_asked_to_reply_surfaces_at_the_next_call():
    chan, _ = _start(2)
    try:
        with pytest.raises(EngineDeadError, match="rank 0 exploded"):
            _call(chan, "boom", ranks=(1,))   # rank 0's error may come in with rank 1's reply ...
            time.sleep(0.3)
            _call(chan, "echo", ranks=(1,))   # ... or, at the latest, with the next command
    finally:
        chan.broadcast((STOP, (), {}, ()))
        chan.close()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_closed_worker_connection_is_a_dead_worker_not_a_hang(how):
    chan = DriverChannel(1, "127.0.0.1", "t")
    conn = {}

    def fake_worker():
        s = socket.create_connection(chan.address)
        from pagedawq.engine.executor.step_channel import _send_frame
        _send_frame(s, (0, "t"))
        conn["s"] = s

    t = threading.Thread(target=fake_worker)
    t.start()
    chan.accept_all(timeout_s=10, still_starting=lambda: None)
    t.join()
    with pytest.raises(EngineDeadError, match="worker died"):
        if how == "reset":
            # The command went out, then the process is killed mid-step: the kernel aborts the
            # connection (RST, not FIN) and the driver's read fails with a reset.
            chan.broadcast(("echo", (), {}, (0,)))
            conn["s"].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn["s"].close()
        else:
            conn["s"].close()   # the worker process "dies" between steps
            chan.broadcast(("echo", (), {}, (0,)))
        chan.gather((0,), check_alive=lambda: None)
    chan.close()


def test_connection_without_the_token_is_refused():
    chan = DriverChannel(1, "127.0.0.1", "right")
    intruder = threading.Thread(target=serve_worker, args=(chan.address, 0, "wrong", _handler(0)), daemon=True)
    intruder.start()
    with pytest.raises(EngineDeadError, match="did not connect"):
        chan.accept_all(timeout_s=2, still_starting=lambda: None)
    chan.close()
