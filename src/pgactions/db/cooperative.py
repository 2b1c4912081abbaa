"""The synchronous runtime on an asyncio event loop, without blocking the loop.

A host with an event loop (``pgactions serve``) would otherwise hand every action to a thread: a
hop that costs more CPU than a primary-key lookup itself (the submit, a thread's wake-up, the
loop's self-pipe, the GIL passed back and forth; bench/README.md).  Instead the host may run
``Runtime.run`` inside a :class:`LoopGreenlet` with :func:`drive`.  Every wait of the runtime for
the server goes through ``psycopg.Connection.wait``; the pool's connections are
:class:`CooperativeConnection`, whose ``wait`` — inside such a greenlet — hands the socket to the
loop (``add_reader`` / ``add_writer``, the waits psycopg's own ``AsyncConnection`` makes) and
switches back to it; the loop resumes the greenlet when the socket is ready.  The runtime's code
is the same in a thread, a script or a greenlet.

What cannot wait that way raises :class:`WouldBlock` before the action has sent anything to the
server — opening a connection (DNS, TCP, TLS, authentication all block in libpq) and waiting for
a busy pool — and the host runs the action in a thread instead.  The greenlet library is optional
(the ``server`` extra); without it nothing here is active and ``wait`` is psycopg's own.

Rules for code on this path (so greenlets sharing one thread never deadlock): no lock held across
a wait for the server, no sleeping, no other blocking I/O.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.waiting import Wait

try:  # optional: pip install 'pgactions[server]'
    from greenlet import getcurrent as _getcurrent
    from greenlet import greenlet as _greenlet
except ImportError:  # pragma: no cover - the server extra brings it
    _getcurrent = None
    _greenlet = object

__all__ = ["CooperativeConnection", "LoopGreenlet", "WouldBlock", "active", "available", "call_blocking", "drive"]

T = TypeVar("T")

_R, _W = int(Wait.R), int(Wait.W)


class WouldBlock(BaseException):
    """The action would have to block the event loop (connect, or wait for a busy pool); nothing
    was sent to the server yet: run it in a thread.  A BaseException, so that no ``except
    Exception`` on the way turns it into an action's error."""


class LoopGreenlet(_greenlet):  # type: ignore[misc,valid-type]
    """A greenlet whose waits for the server are its event loop's (see :func:`drive`)."""


def available() -> bool:
    """Whether greenlets can be used here (the ``greenlet`` package is installed)."""
    return _getcurrent is not None


def active() -> bool:
    """Whether the calling code runs inside :func:`drive`: it must not block."""
    return _getcurrent is not None and type(_getcurrent()) is LoopGreenlet


class CooperativeConnection(psycopg.Connection):  # type: ignore[type-arg]
    """A psycopg connection that, inside a :class:`LoopGreenlet`, waits on the event loop;
    anywhere else it is psycopg's own (the C wait loop)."""

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        current = _getcurrent() if _getcurrent is not None else None
        if timeout is not None or type(current) is not LoopGreenlet:
            return super().wait(gen, interval=interval, timeout=timeout)
        fileno = self.pgconn.socket
        loop_side = current.parent
        try:
            state = next(gen)
            while True:
                state = gen.send(loop_side.switch((fileno, state)))
        except StopIteration as done:
            return done.value


def call_blocking(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` for something that blocks (a cancel request opens a connection of its own):
    inside :func:`drive`, in a thread while the loop goes on; anywhere else, directly."""
    current = _getcurrent() if _getcurrent is not None else None
    if type(current) is not LoopGreenlet:
        return fn(*args)
    future = _blocking_pool().submit(fn, *args)
    current.parent.switch(future)  # drive() resumes us once it is done
    return future.result()


_BLOCKING: concurrent.futures.ThreadPoolExecutor | None = None
_BLOCKING_LOCK = threading.Lock()


def _blocking_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _BLOCKING
    with _BLOCKING_LOCK:
        if _BLOCKING is None:
            _BLOCKING = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="pgactions-blocking")
        return _BLOCKING


async def drive(fn: Callable[..., T], *args: Any, cancel: threading.Event | None = None) -> T:
    """``fn(*args)`` in a :class:`LoopGreenlet` on the running loop: its waits for the server are
    this loop's.  Returns its result or raises its exception (:class:`WouldBlock` included).

    Cancelling the awaiting task sets *cancel* (the runtime then cancels the query on the server
    and rolls back) and raises at once, as a thread's caller would: the action finishes in a task
    of its own (:func:`_finish_apart`), so a greenlet is never left half-way with a connection
    checked out, and a caller cancelled again and again (anyio's cancel scopes) never spins."""
    loop = asyncio.get_running_loop()
    child = LoopGreenlet(fn)
    request = child.switch(*args)
    while not child.dead:
        try:
            ready = await _ready(loop, request)
        except asyncio.CancelledError:
            if cancel is not None:
                cancel.set()
            _finish_apart(loop, child, request)
            raise
        request = child.switch(ready)
    return request  # type: ignore[no-any-return]


# Greenlets of cancelled callers, finishing (a task is kept only weakly by the loop).
_APART: set[asyncio.Task[None]] = set()


def _finish_apart(loop: asyncio.AbstractEventLoop, child: Any, request: Any) -> None:
    task = loop.create_task(_finish(loop, child, request))
    _APART.add(task)
    task.add_done_callback(_APART.discard)


async def _finish(loop: asyncio.AbstractEventLoop, child: Any, request: Any) -> None:
    """Drive a cancelled caller's greenlet to its end — its query cancelled on the server, its
    transaction rolled back, its connection back in the pool.  Its outcome has nobody to go to."""
    while not child.dead:
        try:
            ready = await _ready(loop, request)
        except asyncio.CancelledError:  # the loop is shutting down: finish all the same
            continue
        try:
            request = child.switch(ready)
        except BaseException:  # the action's own error (CANCELLED): nobody waits for it
            return


async def _ready(loop: asyncio.AbstractEventLoop, request: Any) -> int | None:
    """What the greenlet waits for: its socket ready (the Ready value to send it), or the thread
    of a :func:`call_blocking` done (None)."""
    if isinstance(request, concurrent.futures.Future):
        await asyncio.wait([asyncio.wrap_future(request)])
        return None
    fileno, state = request
    future = loop.create_future()
    if state & _R:
        loop.add_reader(fileno, _wake, future, _R)
    if state & _W:
        loop.add_writer(fileno, _wake, future, _W)
    try:
        return await future
    finally:
        if state & _R:
            loop.remove_reader(fileno)
        if state & _W:
            loop.remove_writer(fileno)


def _wake(future: asyncio.Future[int], ready: int) -> None:
    if not future.done():
        future.set_result(ready)

