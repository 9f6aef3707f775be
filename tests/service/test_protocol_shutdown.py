"""The protocol at shutdown: a request on its way on an idle keep-alive connection is answered
(with `connection: close`), not dropped with the connection (a refusal at shutdown:
test_refusal.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from service import Settings, protocol
from tests.service.test_refusal import request, served, settle

pytestmark = pytest.mark.timeout(60)


def test_a_request_arriving_on_an_idle_connection_after_shutdown_is_answered_then_closed(
    make_settings: Callable[..., Settings],
) -> None:
    async def go() -> tuple[bytes, bool, bytes, bool]:
        async with served(make_settings()) as (server, _):
            conn, socket = server.connect()
            conn.data_received(request(b"GET", b"/health"))
            first = await settle(conn, socket, 1)
            conn.shutdown()  # idle: uvicorn itself would close it here
            closed_at_once = socket.closed
            conn.data_received(request(b"GET", b"/health"))  # it was already on its way
            both = await settle(conn, socket, 2)
            return first, closed_at_once, both, socket.closed

    first, closed_at_once, both, closed = asyncio.run(go())
    assert first.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in first
    assert not closed_at_once
    second = both[len(first) :]
    assert second.startswith(b"HTTP/1.1 200 ") and b"connection: close" in second
    assert closed


def test_an_idle_connection_that_sends_nothing_is_closed_after_the_grace(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "IDLE_GRACE_S", 0.2)

    async def go() -> tuple[bool, bool]:
        async with served(make_settings()) as (server, _):
            conn, socket = server.connect()
            conn.shutdown()
            await asyncio.sleep(0.05)
            early = socket.closed
            await asyncio.sleep(0.3)
            return early, socket.closed

    assert asyncio.run(go()) == (False, True)
