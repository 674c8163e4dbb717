"""The serve scheduler in-process, with a scripted engine: FIFO order, long waits, leaving, a full queue."""

from __future__ import annotations

import asyncio

import pytest
from fakes import ScriptedEngine

from kimi_cli.conversation import Message, Request
from kimi_cli.events.types import AnswerDelta, Finished
from kimi_cli.server.scheduler import KEEPALIVE, QueueFull, Scheduler


def _request(text: str) -> Request:
    return Request((Message.text("user", text),))


def _engine(delay: float = 0.0, tokens: int = 5) -> ScriptedEngine:
    return ScriptedEngine([*(AnswerDelta(f"t{i} ") for i in range(tokens)), Finished("end_turn")], delay=delay)


async def _collect(scheduler: Scheduler, job, keepalive: float | None = None) -> list:
    return [e async for e in scheduler.events(job, keepalive)]


def test_fifo_and_a_long_wait_in_the_queue_is_not_leaving():
    async def main():
        engine = _engine(delay=0.02)
        scheduler = Scheduler(engine, max_queue=8)
        jobs = [scheduler.submit(_request(f"q{i}")) for i in range(3)]
        # The last job waits ~0.2 s, far longer than the 0.01 s keep-alive interval.
        results = await asyncio.gather(*(_collect(scheduler, job, 0.01) for job in jobs))
        scheduler.close()
        return engine, scheduler, results

    engine, scheduler, results = asyncio.run(main())
    assert [r.messages[0].parts[0].text for r in engine.requests] == ["q0", "q1", "q2"]
    for events in results:
        real = [e for e in events if e is not KEEPALIVE]
        assert isinstance(real[-1], Finished) and real[-1].stop_reason == "end_turn"
        assert len(real) == 6
    assert KEEPALIVE in results[2]
    assert (scheduler.stats.completed, scheduler.stats.cancelled) == (3, 0)


def test_leaving_cancels_the_running_job_and_drops_a_queued_one():
    async def main():
        engine = _engine(delay=0.01, tokens=50)
        scheduler = Scheduler(engine, max_queue=8)
        running, queued = scheduler.submit(_request("long")), scheduler.submit(_request("queued"))
        events = scheduler.events(running)
        first = await events.__anext__()
        await events.aclose()  # the client went away mid-stream
        scheduler.abandon(queued)  # and this one before its turn
        follow = scheduler.submit(_request("next"))
        done = await asyncio.wait_for(_collect(scheduler, follow), 10)
        scheduler.close()
        return engine, scheduler, first, done

    engine, scheduler, first, done = asyncio.run(main())
    assert isinstance(first, AnswerDelta)
    assert [r.messages[0].parts[0].text for r in engine.requests] == ["long", "next"]
    assert scheduler.stats.cancelled == 1 and scheduler.stats.completed == 1
    assert done[-1].stop_reason in ("end_turn", "cancelled") and len(done) > 1


def test_full_queue():
    async def main():
        scheduler = Scheduler(_engine(delay=0.05), max_queue=1)
        scheduler.submit(_request("a"))
        await asyncio.sleep(0.02)  # "a" is running now; one may wait
        scheduler.submit(_request("b"))
        with pytest.raises(QueueFull):
            scheduler.submit(_request("c"))
        scheduler.close()

    asyncio.run(main())
