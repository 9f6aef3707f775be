"""The overload refusal at the protocol: while the model is full, a `/predict` gets the app's
own 503 from the connection itself (no ASGI task), its body is dropped, the connection serves
the next request, and the refusal is counted where the app counts its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.server import ServerState

from service import Settings, create_app, payload
from service.protocol import HeaderTimeoutProtocol
from service.refusal import STATE_KEY, Refusal, is_predict
from tests.service.test_app import Gate
from tests.service.test_protocol import Socket

pytestmark = pytest.mark.timeout(60)
BODY = b'{"text": "sad"}'


def request(method: bytes, path: bytes, body: bytes = b"", *headers: bytes) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"host: t", b"content-type: application/json"]
    lines += [b"content-length: " + str(len(body)).encode(), *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Served:
    """One app started, its model blocked on a Gate, and connections speaking raw HTTP to the
    protocol the service runs (the app behind it answers what the protocol lets through)."""

    def __init__(self, app: Any, asgi_state: dict[str, Any], gate: Gate) -> None:
        self.app, self.asgi_state, self.gate = app, asgi_state, gate
        self.config = uvicorn.Config(app, lifespan="off", access_log=False)
        self.config.load()
        self.server_state = ServerState()

    def connect(self) -> tuple[HeaderTimeoutProtocol, Socket]:
        protocol = HeaderTimeoutProtocol(
            self.config, self.server_state, self.asgi_state, header_timeout_s=5
        )
        socket = Socket()
        protocol.connection_made(socket)
        return protocol, socket

    async def fill(self, client: httpx.AsyncClient) -> asyncio.Future[httpx.Response]:
        """One request running behind the gate: the queue (size 1) is full."""
        running = asyncio.ensure_future(client.post("/predict", json={"text": "good"}))
        await asyncio.to_thread(self.gate.entered.wait, 5)
        return running


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[Served, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app) as asgi_state:
        scheduler: Any = app.state.service.registry.default.scheduler
        gate = Gate(scheduler._infer)
        scheduler._infer = gate
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            try:
                yield Served(app, asgi_state, gate), client
            finally:
                gate.open.set()


async def settle(protocol: HeaderTimeoutProtocol, socket: Socket, answers: int) -> bytes:
    """What the connection sent once `answers` responses left (the app's run as tasks)."""
    for _ in range(500):
        await asyncio.sleep(0.01)
        sent = b"".join(socket.sends)
        if sent.count(b"HTTP/1.1 ") >= answers and not protocol.tasks:
            return sent
    raise AssertionError(f"got {b''.join(socket.sends)!r}")


def one_slot(make_settings: Callable[..., Settings], **changes: Any) -> Settings:
    return make_settings(queue_size=1, max_texts=1, max_batch=1, pool_size=1, **changes)


def test_a_full_model_is_refused_by_the_connection_with_the_apps_own_503(
    make_settings: Callable[..., Settings],
) -> None:
    async def go() -> tuple[httpx.Response, bytes, int, str]:
        async with served(one_slot(make_settings)) as (server, client):
            running = await server.fill(client)
            by_app = await client.post("/predict", content=BODY, headers={"content-type": "application/json"})  # fmt: skip
            protocol, socket = server.connect()
            protocol.data_received(request(b"POST", b"/predict", BODY))
            tasks_at_once = len(protocol.tasks)  # an ASGI cycle would be a task by now
            protocol.data_received(request(b"GET", b"/health"))  # the same connection
            sent = await settle(protocol, socket, 2)
            server.gate.open.set()
            await running
            metrics = (await client.get("/metrics")).text
        return by_app, sent, tasks_at_once, metrics

    by_app, sent, tasks_at_once, metrics = asyncio.run(go())
    assert tasks_at_once == 0
    head, _, rest = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"connection: close" not in head
    assert rest.startswith(by_app.content)  # the body the app itself sends
    assert b"retry-after: " + by_app.headers["retry-after"].encode() in head
    assert rest[len(by_app.content) :].startswith(b"HTTP/1.1 200 ")  # /health, same connection
    assert not socket_closed(sent)
    assert 'sentiment_rejected_total{model="tiny-test",reason="overloaded"} 2.0' in metrics
    assert 'route="/predict",status="503"} 2.0' in metrics  # the app's and the connection's


def socket_closed(sent: bytes) -> bool:
    return b"connection: close" in sent


@pytest.mark.parametrize(
    "extra, body",
    [
        (b"connection: close", BODY),
        (b"expect: 100-continue", BODY),
        (b"x-pad: 1", b"x" * 200),  # over max_body_bytes: read only to be dropped
        (b"", BODY),  # an ordinary request, but the server is shutting down
    ],
    ids=["client-closes", "expect-100", "oversized", "server-shutting-down"],
)
def test_the_connection_closes_after_a_refusal_it_cannot_cheaply_keep(
    make_settings: Callable[..., Settings], extra: bytes, body: bytes
) -> None:
    async def go() -> tuple[bytes, bool]:
        async with served(one_slot(make_settings, max_body_bytes=100)) as (server, client):
            running = await server.fill(client)
            protocol, socket = server.connect()
            if not extra:
                protocol.shutdown()
            raw = request(b"POST", b"/predict", body, *([extra] if extra else []))
            protocol.data_received(raw.split(b"\r\n\r\n")[0] + b"\r\n\r\n")  # headers only
            await asyncio.sleep(0)
            sent, closed = b"".join(socket.sends), socket.closed
            server.gate.open.set()
            await running
        return sent, closed

    sent, closed = asyncio.run(go())
    assert sent.startswith(b"HTTP/1.1 503 ") and b"connection: close" in sent and closed


def test_with_room_the_app_answers_and_other_routes_are_never_refused(
    make_settings: Callable[..., Settings],
) -> None:
    async def go() -> tuple[bytes, bytes]:
        async with served(one_slot(make_settings)) as (server, client):
            protocol, socket = server.connect()
            server.gate.open.set()
            protocol.data_received(request(b"POST", b"/predict", BODY))
            with_room = await settle(protocol, socket, 1)
            server.gate.open.clear()
            server.gate.entered.clear()
            running = await server.fill(client)
            protocol, socket = server.connect()
            protocol.data_received(request(b"POST", b"/info", BODY))  # not /predict
            other = await settle(protocol, socket, 1)
            server.gate.open.set()
            await running
        return with_room, other

    with_room, other = asyncio.run(go())
    assert with_room.startswith(b"HTTP/1.1 200 ") and b'"label"' in with_room
    assert other.startswith(b"HTTP/1.1 405 ")  # the app's answer, not the refusal


def test_a_draining_service_leaves_the_answer_to_the_app(
    make_settings: Callable[..., Settings],
) -> None:
    async def go() -> tuple[int, Refusal]:
        async with served(one_slot(make_settings)) as (server, client):
            running = await server.fill(client)
            server.app.state.service.draining = True
            protocol, socket = server.connect()
            protocol.data_received(request(b"POST", b"/predict", BODY))
            tasks = len(protocol.tasks)
            server.app.state.service.draining = False
            server.gate.open.set()
            await running
            await settle(protocol, socket, 1)
        return tasks, server.asgi_state[STATE_KEY]

    tasks, refusal = asyncio.run(go())
    assert tasks == 1 and isinstance(refusal, Refusal)  # the app's cycle took it


@pytest.mark.parametrize(
    "method, url, expected",
    [
        (b"POST", b"/predict", True),
        (b"POST", b"/predict?x=1", True),
        (b"GET", b"/predict", False),
        (b"POST", b"/predictions", False),
        (b"POST", b"/", False),
    ],
)
def test_only_a_post_to_predict_is_ever_refused_early(
    method: bytes, url: bytes, expected: bool
) -> None:
    assert is_predict(method, url) is expected


def test_a_body_already_in_is_read_without_arming_the_body_timer(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that came in one packet is read without a timer (one per request that could
    never fire); a body still on its way when the app reads it gets one, and its 408."""
    armed: list[float] = []
    timeout = asyncio.timeout

    def recording(delay: float) -> Any:
        armed.append(delay)
        return timeout(delay)

    monkeypatch.setattr(payload.asyncio, "timeout", recording)

    async def go() -> tuple[bytes, list[float], bytes]:
        async with served(make_settings(body_timeout_s=0.2)) as (server, _):
            server.gate.open.set()  # the model answers at once
            whole, whole_socket = server.connect()
            whole.data_received(request(b"POST", b"/predict", BODY))
            answered = await settle(whole, whole_socket, 1)
            after_whole = list(armed)
            split, split_socket = server.connect()
            split.data_received(request(b"POST", b"/predict", BODY)[:-5])  # the rest never comes
            return answered, after_whole, await settle(split, split_socket, 1)

    whole, after_whole, split = asyncio.run(go())
    assert whole.startswith(b"HTTP/1.1 200 ") and b'"label"' in whole
    assert after_whole == []  # no timer for the whole body
    assert armed == [0.2]  # one for the body still on its way
    assert split.startswith(b"HTTP/1.1 408 ") and b"did not arrive" in split
