"""The connection's transport: a response's writes leave as one send, and nothing is lost or
held past the loop iteration (the slow-headers timeout is tested on a real server)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from service.protocol import CoalescingTransport


def on_a_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


class Socket(asyncio.Transport):
    """What the event loop would send, one entry per send. A write after close is recorded
    too, for the test to see: raising here would not fail it, as the flush runs in a loop
    callback, whose exceptions the loop logs and drops."""

    def __init__(self) -> None:
        super().__init__()
        self.sends: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sends.append(bytes(data) if not self.closed else b"<after close> " + bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1234) if name == "peername" else default


@on_a_loop
async def test_headers_and_body_leave_as_one_send() -> None:
    socket = Socket()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert socket.sends == [] and transport.get_write_buffer_size() > 0  # held, and counted
    transport.write(bytearray(b"{}"))
    assert socket.sends == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    await asyncio.sleep(0)
    assert len(socket.sends) == 1  # the scheduled flush finds nothing left
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1234)


@on_a_loop
async def test_a_lone_write_leaves_at_the_end_of_the_loop_iteration() -> None:
    socket = Socket()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())
    transport.write(b"headers of a streamed response")
    await asyncio.sleep(0)
    assert socket.sends == [b"headers of a streamed response"]


@on_a_loop
async def test_close_sends_what_is_held_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    socket = Socket()
    transport = CoalescingTransport(socket, loop)
    transport.write(b"408 and close")
    transport.close()
    assert socket.sends == [b"408 and close"] and socket.closed and transport.is_closing()
    await asyncio.sleep(0)  # the flush scheduled by the write runs
    assert socket.sends == [b"408 and close"]
    other = Socket()
    transport = CoalescingTransport(other, loop)
    transport.write(b"never sent")
    transport.abort()
    await asyncio.sleep(0)
    assert other.sends == [] and other.aborted


@on_a_loop
async def test_a_flush_after_the_connection_closed_drops_what_is_held() -> None:
    socket = Socket()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())
    transport.write(b"an answer to a client that left")
    socket.close()  # closed underneath the transport (the peer went away)
    assert transport.get_write_buffer_size() > 0
    await asyncio.sleep(0)  # the scheduled flush runs
    assert transport.get_write_buffer_size() == 0  # it ran, and let go of the bytes ...
    assert socket.sends == []  # ... without writing them to the closed socket
