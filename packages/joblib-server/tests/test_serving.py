"""``serve``'s HTTP protocol sends a response's head and body together."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from zndraw_joblib_server.serving import guarded_protocol

REQUEST = b"GET /things HTTP/1.1\r\nHost: example\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _served(app: Any) -> RecordingTransport:
    config = Config(app=app, lifespan="off", log_level="warning")
    config.load()
    protocol = guarded_protocol(10.0, 30.0)(
        config=config, server_state=ServerState(), app_state={}
    )
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(REQUEST)
    return transport


async def _turns(count: int = 20) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_response_goes_out_in_one_write() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
        )
        await send({"type": "http.response.body", "body": b"hello"})

    transport = await _served(app)
    await _turns()
    assert len(transport.writes) == 1, transport.writes
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\nhello")


async def test_a_head_is_not_held_back_for_a_late_body() -> None:
    later = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await later.wait()
        await send({"type": "http.response.body", "body": b"late"})

    transport = await _served(app)
    await _turns()
    assert len(transport.writes) == 1, transport.writes  # the head, on its own
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    later.set()
    await _turns()
    assert b"".join(transport.writes).endswith(b"late\r\n0\r\n\r\n")
