"""A low-latency command channel from the driver to its tensor-parallel workers.

A Ray actor call costs a few hundred microseconds to a millisecond of serialization, scheduling and
object-store traffic; at batch 1 a decode step of a sharded model takes a few milliseconds, so one
Ray round trip per step would eat much of what tensor parallelism gains. Ray therefore only places
and starts the workers; each step then travels over one TCP connection per worker: the driver
writes the same length-prefixed pickle to every socket, the workers block in ``recv`` (no busy
polling, which matters when the CPU ranks share two cores), and only the ranks asked to reply
write back.

Failure is visible, never a hang: a worker process that dies closes its socket (EOF, or a reset
when the kernel aborts the connection of a killed process), and a worker that raises sends its
traceback; either ends the driver's wait with :class:`EngineDeadError`. So does a worker that is
alive but stuck (a device kernel waiting for peers that moved on, a collective the others never
made): its peers answer the same command and it does not (``STRAGGLER_TIMEOUT_S``), or no rank
answers at all (``COMMAND_TIMEOUT_S``). An error the user can act on (a :class:`PagedAWQError`:
weights that do not fit, unreadable files) is raised on the driver as itself, as with one process,
the rank and its traceback in a note.
Connections are authenticated with a per-engine random token, since the driver unpickles what it
receives.
"""
from __future__ import annotations

import hmac
import os
import pickle
import selectors
import socket
import struct
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from pagedawq.errors import EngineDeadError, PagedAWQError

_HEADER = struct.Struct("!Q")
STOP = "__stop__"


def seconds_from_env(name: str, default: float) -> float:
    """A time limit from the environment variable ``name`` (``default`` when unset)."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


# Ranks run the same program in lockstep (every collective waits for all), so they answer a command
# within moments of each other: a rank still silent this long after a peer answered is stuck.
STRAGGLER_TIMEOUT_S = seconds_from_env("PAGEDAWQ_STRAGGLER_TIMEOUT_S", 300.0)
# No command takes this long, the first steps' kernel compiles and graph captures included.
COMMAND_TIMEOUT_S = seconds_from_env("PAGEDAWQ_COMMAND_TIMEOUT_S", 1800.0)
_STUCK_HINT = ("it is alive but stuck, most likely in a device kernel waiting for peers that moved on "
               "or in a collective the others did not make. If it recurs, PAGEDAWQ_DISABLE_SYMM_MEM_ALLREDUCE=1 "
               "keeps every collective on NCCL; please report it")


def _send_frame(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return bytes(buf)


def _recv_frame(sock: socket.socket) -> tuple[bool, Any]:
    """(True, obj), or (False, None) when the peer has closed or reset the connection."""
    try:
        header = _recv_exact(sock, _HEADER.size)
        if header is None:
            return False, None
        data = _recv_exact(sock, _HEADER.unpack(header)[0])
    except ConnectionError:   # reset by a killed peer: as final as an orderly close
        return False, None
    if data is None:
        return False, None
    return True, pickle.loads(data)


def _configure(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class DriverChannel:
    """The driver's end: one listening socket, then one connection per rank."""

    def __init__(self, world_size: int, host: str, token: str) -> None:
        self.world_size = world_size
        self.token = token
        self._listener = socket.create_server((host, 0))
        self.address = (host, self._listener.getsockname()[1])
        self._socks: list[socket.socket | None] = [None] * world_size
        self._selector = selectors.DefaultSelector()

    def accept_all(self, timeout_s: float, still_starting: Callable[[], None]) -> None:
        """Wait until every rank has connected and proved the token. ``still_starting`` is called
        between accepts and raises if a worker failed meanwhile."""
        self._listener.settimeout(1.0)
        waited = 0.0
        while any(s is None for s in self._socks):
            still_starting()
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                waited += 1.0
                if waited >= timeout_s:
                    missing = [r for r, s in enumerate(self._socks) if s is None]
                    raise EngineDeadError(f"tensor-parallel ranks {missing} did not connect within {timeout_s:.0f} s")
                continue
            conn.settimeout(timeout_s)
            ok, hello = _recv_frame(conn)
            if not (ok and isinstance(hello, tuple) and len(hello) == 2
                    and hmac.compare_digest(str(hello[1]), self.token)
                    and isinstance(hello[0], int) and 0 <= hello[0] < self.world_size
                    and self._socks[hello[0]] is None):
                conn.close()   # not one of ours
                continue
            conn.settimeout(None)
            _configure(conn)
            self._socks[hello[0]] = conn
            self._selector.register(conn, selectors.EVENT_READ, hello[0])
        self._listener.close()

    def broadcast(self, message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _HEADER.pack(len(data)) + data
        for rank, sock in enumerate(self._socks):
            try:
                sock.sendall(frame)
            except OSError as e:
                raise EngineDeadError(f"a tensor-parallel worker died (rank {rank}: {e})") from e

    def gather(self, ranks: Iterable[int], check_alive: Callable[[], None], command: str = "the command"
               ) -> dict[int, Any]:
        """Replies of ``ranks`` to ``command``. Any rank may instead report an error or close its
        socket; either raises at once. ``check_alive`` runs about once a second while nothing
        arrives. A rank silent ``STRAGGLER_TIMEOUT_S`` after another answered, or no answer in
        ``COMMAND_TIMEOUT_S``, raises too (a stuck rank)."""
        wanted, replies = set(ranks), {}
        start, first_reply = time.monotonic(), None
        while wanted - replies.keys():
            events = self._selector.select(timeout=1.0)
            if not events:
                check_alive()
            self._check_progress(command, wanted, replies, start, first_reply)
            for key, _ in events:
                rank = key.data
                ok, reply = _recv_frame(key.fileobj)
                if not ok:
                    raise EngineDeadError(f"a tensor-parallel worker died (rank {rank} closed its connection)")
                status, value = reply
                if status == "error":
                    text, user_error = value
                    if user_error is not None:
                        user_error.add_note(f"raised by tensor-parallel rank {rank}:\n{text}")
                        raise user_error
                    raise EngineDeadError(f"tensor-parallel rank {rank} failed:\n{text}")
                replies[rank] = value
                first_reply = first_reply or time.monotonic()
        return replies

    @staticmethod
    def _check_progress(command: str, wanted: set[int], replies: dict[int, Any], start: float,
                        first_reply: float | None) -> None:
        """Raise if the ranks ``gather`` still waits for look stuck (the lists are built only then:
        this runs on every step's wait)."""
        now = time.monotonic()
        if first_reply is not None and now - first_reply > STRAGGLER_TIMEOUT_S:
            raise EngineDeadError(
                f"tensor-parallel rank(s) {sorted(wanted - replies.keys())} did not answer {command} within "
                f"{STRAGGLER_TIMEOUT_S:.0f} s of rank(s) {sorted(replies)}: {_STUCK_HINT} "
                "(PAGEDAWQ_STRAGGLER_TIMEOUT_S sets the limit)")
        if now - start > COMMAND_TIMEOUT_S:
            raise EngineDeadError(
                f"tensor-parallel rank(s) {sorted(wanted - replies.keys())} did not answer {command} within "
                f"{COMMAND_TIMEOUT_S:.0f} s: {_STUCK_HINT} (PAGEDAWQ_COMMAND_TIMEOUT_S sets the limit)")

    def close(self) -> None:
        for sock in self._socks:
            if sock is not None:
                try:
                    self._selector.unregister(sock)
                except (KeyError, ValueError):
                    pass
                sock.close()
        self._socks = [None] * self.world_size
        self._listener.close()
        self._selector.close()


def _user_error(e: Exception) -> PagedAWQError | None:
    """``e`` where the driver should raise it as it is: an error the user can act on, which
    survives pickling (the driver gets an EngineDeadError with the traceback otherwise)."""
    if not isinstance(e, PagedAWQError):
        return None
    try:
        pickle.loads(pickle.dumps(e, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001 - an exception that does not pickle is sent as text only
        return None
    return e


def serve_worker(address: tuple[str, int], rank: int, token: str, handler: Callable[..., Any]) -> None:
    """The worker's loop: run ``handler(method, *args, **kwargs)`` for every command until STOP or
    until the driver goes away. Replies ("ok", result) when asked, ("error", (traceback, the exception
    if the user can act on it, else None)) always."""
    sock = socket.create_connection(address)
    _configure(sock)
    try:
        _send_frame(sock, (rank, token))
        while True:
            ok, message = _recv_frame(sock)
            if not ok:
                return
            method, args, kwargs, reply_ranks = message
            if method == STOP:
                return
            try:
                result = handler(method, *args, **kwargs)
            except Exception as e:
                _send_frame(sock, ("error", (traceback.format_exc(), _user_error(e))))
                continue
            if rank in reply_ranks:
                _send_frame(sock, ("ok", result))
    finally:
        sock.close()
