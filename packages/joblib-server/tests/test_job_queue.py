"""JobQueue on its own: what it starts, what it stops, and what it leaves to its owner."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from zndraw_joblib_server import JobLibSettings, JobQueue, create_engine


async def test_start_creates_the_tables_and_stop_disposes_only_its_own_engine(
    settings: JobLibSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    disposed: list[object] = []
    real_dispose = AsyncEngine.dispose

    async def spy(self: AsyncEngine, close: bool = True) -> None:
        disposed.append(self)
        await real_dispose(self, close)

    monkeypatch.setattr(AsyncEngine, "dispose", spy)
    own = JobQueue(settings, sweeper=False)
    async with own.lifespan():
        pass
    assert disposed == [own.engine]

    engine = create_engine(settings.database_url)
    try:
        queue = JobQueue(settings, engine=engine, sweeper=False)
        async with queue.lifespan():
            assert queue.started
            async with queue.session_maker() as session:
                count = await session.execute(text("SELECT count(*) FROM joblib_task"))
                assert count.scalar_one() == 0
        assert not queue.started
        assert disposed == [own.engine], "a given engine was disposed of"
    finally:
        await engine.dispose()


async def test_start_and_stop_are_idempotent_and_run_the_sweeper(
    settings: JobLibSettings,
) -> None:
    queue = JobQueue(settings)
    await queue.start()
    await queue.start()
    try:
        assert queue._sweeper is not None
        assert not queue._sweeper.done()
    finally:
        await queue.stop()
        await queue.stop()
    assert queue._sweeper is None
    assert not queue.started


@pytest.mark.parametrize("fast_lane", [True, False])
async def test_include_in_wires_the_state_the_routes_read(
    settings: JobLibSettings, fast_lane: bool
) -> None:
    queue = JobQueue(settings, sweeper=False)
    app = FastAPI(lifespan=queue.lifespan)
    queue.include_in(app, fast_lane=fast_lane)
    assert app.state.session_maker is queue.session_maker
    assert app.state.joblib_settings is settings
    assert app.state.joblib_queue is queue
    assert "/v1/joblib/tasks/claim" in app.openapi()["paths"]
    assert any(m.cls.__name__ == "FastLane" for m in app.user_middleware) is fast_lane
    await queue.stop()
