"""Provider events: what the event sink receives, and the Socket.IO emits they become."""

from __future__ import annotations

from zndraw_joblib_core import ProviderResultReady, ProvidersChanged, request_hash
from zndraw_joblib_server.socketio_events import (
    PROVIDER_RESULT_READY,
    PROVIDERS_INVALIDATE,
    Emission,
    emissions_for,
)

P = "/v1/joblib"


async def test_register_upload_and_worker_removal_emit(as_alice, events) -> None:
    resp = await as_alice.put(f"{P}/rooms/lab/providers", json={"category": "c", "name": "n"})
    provider = resp.json()
    assert events == [ProvidersChanged(room_id="lab")]
    events.clear()
    rhash = request_hash({"a": "1"})
    upload = await as_alice.post(
        f"{P}/providers/{provider['id']}/results",
        content=b"{}",
        headers={"X-Request-Hash": rhash},
    )
    assert upload.status_code == 204
    assert events == [
        ProviderResultReady(room_id="lab", provider_name="lab:c:n", request_hash=rhash)
    ]
    events.clear()
    gone = await as_alice.delete(f"{P}/workers/{provider['worker_id']}")
    assert gone.status_code == 204
    assert ProvidersChanged(room_id="lab") in events
    listing = await as_alice.get(f"{P}/rooms/lab/providers")
    assert listing.json()["total"] == 0


def test_socketio_names_and_rooms() -> None:
    emitted = emissions_for(
        [
            ProvidersChanged(room_id="lab"),
            ProvidersChanged(room_id="lab"),
            ProviderResultReady(room_id="lab", provider_name="lab:c:n", request_hash="h"),
        ]
    )
    assert emitted == [
        Emission(PROVIDERS_INVALIDATE, {}, "room:lab"),
        Emission(
            PROVIDER_RESULT_READY, {"provider_name": "lab:c:n", "request_hash": "h"}, "room:lab"
        ),
    ]
