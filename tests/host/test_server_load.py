"""`kinema serve` under load, at a size CI runs in seconds (issue 18, "Done"): 50 queued prompts, 20 WebSocket readers,
one client that never reads, an interrupt, deletes and cancels, and a hostile page knocking on every door meanwhile.

Asserts: every job is accounted for (completed, cancelled or deleted, and nothing else), no reader missed the end of
any of its jobs, the never-reading client was dropped (not the server), RSS stayed within a bound, and the hostile
Origin got 403 every time without changing anything.
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import WSMsgType, WSServerHandshakeError  # noqa: E402

from test_server import connect, folders, graph  # noqa: E402,F401
from test_server_limits import EVIL, never_reading_client, run_app  # noqa: E402

READERS, PROMPTS = 20, 50
RSS_BOUND_MB = 250          # measured ~+40 MB; the never-reader alone may hold 16 MB queued, the history ~1 MB


def _rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / (1 << 20)


async def _read_all(ws, seen: dict, stop: asyncio.Event) -> None:
    """Collect one reader's JSON events until stopped: {prompt_id: [event types]}, plus "status" counts."""
    while not stop.is_set():
        try:
            m = await ws.receive(timeout=0.5)
        except asyncio.TimeoutError:
            continue
        if m.type == WSMsgType.BINARY:
            continue
        if m.type != WSMsgType.TEXT:
            break
        event = json.loads(m.data)
        data = event.get("data") or {}
        key = data.get("prompt_id", "(status)" if event["type"] == "status" else "(other)")
        seen.setdefault(key, []).append(event["type"] if event["type"] != "executing" or data.get("node") else "end")


async def _hostile(c) -> list[int]:
    """What another site's page can send: every answer must be 403."""
    h = {"Origin": EVIL}
    statuses = [(await c.post("/api/prompt", json={"prompt": graph()}, headers=h)).status,
                (await c.post("/prompt", data=json.dumps({"prompt": graph()}),
                              headers={**h, "Content-Type": "text/plain"})).status,
                (await c.post("/api/interrupt", headers=h)).status,
                (await c.post("/api/queue", json={"clear": True}, headers=h)).status,
                (await c.post("/api/history", json={"clear": True}, headers=h)).status,
                (await c.post("/api/settings/Comfy.Evil", data="1", headers=h)).status]
    try:
        await c.ws_connect("/ws?clientId=evil", headers=h)
        statuses.append(101)
    except WSServerHandshakeError as exc:
        statuses.append(exc.status)
    return statuses


@pytest.mark.slow
def test_server_under_load(folders):
    async def scenario(c, srv):
        readers = [await connect(c, f"r{i}") for i in range(READERS)]
        stop = asyncio.Event()
        seen = [{} for _ in readers]
        tasks = [asyncio.create_task(_read_all(ws, s, stop)) for (ws, _, _), s in zip(readers, seen)]
        sink = await asyncio.to_thread(never_reading_client, c.port, "sink")
        before = _rss_mb()
        hostile = await _hostile(c)

        async def post(prompt, cid):
            r = await c.post("/api/prompt", json={"prompt": prompt, "client_id": cid})
            assert r.status == 200, await r.text()
            return (await r.json())["prompt_id"]

        owner: dict[str, str] = {}
        long_job = await post(graph(value=1, steps=3000, delay=0.01), "r0")        # ~30 s unless interrupted
        owner[long_job] = "r0"
        for n in range(2):                                                         # ~60 MB of previews each
            owner[await post({"1": {"class_type": "KTValue", "inputs": {"value": n}},
                              "2": {"class_type": "KTNoise", "inputs": {"value": ["1", 0], "steps": 60}},
                              "3": {"class_type": "KTSave", "inputs": {"value": ["2", 0]}}}, "sink")] = "sink"
        for n in range(PROMPTS - 3):
            cid = f"r{n % READERS}"
            owner[await post(graph(value=(n % 90) + 2, steps=2, delay=0.002), cid)] = cid
        assert len(owner) == PROMPTS
        hostile += await _hostile(c)
        # delete 5 pending jobs and cancel 2 more, then interrupt the long one once it runs
        pending = [pid for pid, cid in owner.items() if cid != "sink" and pid != long_job]
        deleted = pending[-5:]
        assert (await c.post("/api/queue", json={"delete": deleted[:3]})).status == 200
        for pid in deleted[3:]:
            assert (await c.post(f"/api/jobs/{pid}/cancel")).status == 200
        while (await (await c.get(f"/api/jobs/{long_job}")).json())["status"] != "in_progress":
            await asyncio.sleep(0.05)
        hostile += await _hostile(c)
        assert (await c.post("/api/interrupt", json={"prompt_id": long_job})).status == 200
        deadline = time.monotonic() + 50
        while srv.jobs.pending or srv.jobs.running:
            assert time.monotonic() < deadline, "the queue did not drain"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)                                    # the last events reach the readers
        stop.set()
        await asyncio.gather(*tasks)
        after = _rss_mb()
        sink.close()

        # every job accounted for
        jobs = {j["id"]: j["status"] for j in (await (await c.get("/api/jobs?limit=1000")).json())["jobs"]}
        assert set(jobs) == set(owner) - set(deleted)
        assert jobs[long_job] == "cancelled"
        assert {pid for pid, st in jobs.items() if st == "completed"} == set(owner) - set(deleted) - {long_job}
        # no reader starved: each saw the end of every job of its own, and none of the deleted ones started
        for i, s in enumerate(seen):
            mine = [pid for pid, cid in owner.items() if cid == f"r{i}" and pid not in deleted]
            for pid in mine:
                want = "execution_interrupted" if pid == long_job else "execution_success"
                assert want in s.get(pid, []) and s[pid][-1] == "end", (i, pid, s.get(pid))
            assert not any(pid in s for pid in deleted)
            assert s.get("(status)"), f"reader {i} got no status"
        assert "sink" not in srv.clients.clients and len(srv.clients.clients) == READERS
        # the hostile page: 403 each time, nothing changed
        assert hostile == [403] * len(hostile) and len(hostile) == 21
        assert await (await c.get("/api/settings")).json() == {}
        assert after - before < RSS_BOUND_MB, (before, after)
        return after - before

    start = time.monotonic()
    grew = run_app(folders, scenario)
    print(f"load test: {time.monotonic() - start:.1f} s, RSS +{grew:.0f} MB")


def test_progress_state_messages_are_snapshots_not_the_live_states():
    """A progress_state is serialised later, on the event loop: the message must hold the states as they were when
    it was posted (a busy machine serialised the live dict after the node had finished: "running" was never seen)."""
    from kinema.host.jobs import Job, JobQueue
    posted = []
    queue = JobQueue(executor=None, post=lambda kind, data, sid: posted.append((kind, data)),
                     post_preview=lambda *a: None)
    job = Job(id="p1", number=1, prompt={"2": {"class_type": "X", "inputs": {}}}, extra_data={}, client_id=None,
              outputs_to_execute=["2"], create_time=0)
    job.set_state("2", "running", 1, 3)
    queue._send_states(job, force=True)
    job.set_state("2", "finished")
    queue._send_states(job, force=True)
    states = [data["nodes"]["2"]["state"] for kind, data in posted if kind == "progress_state"]
    assert states == ["running", "finished"]
