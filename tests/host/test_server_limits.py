"""`kinema serve` against a hostile web page and a heavy user (issue 18): origin and Host checks, a client that
stops reading, bad client ids, NaN and malformed extra_data, 4xx instead of 500, bounded history, stale temp
files. The tiny test nodes of test_server.py; no browser."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import time

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import WSServerHandshakeError  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from yarl import URL  # noqa: E402

from kinema.host import jobs as jobs_mod  # noqa: E402
from kinema.host.executor import Executor  # noqa: E402
from kinema.host.origin import refusal  # noqa: E402
from kinema.host.server import SERVER, make_app  # noqa: E402
from test_server import TEST_NODES, _form, _png, connect, folders, graph, of, queue, types, until_done  # noqa: E402,F401

EVIL = "http://evil.example"


def strict_json(text: str):
    """json.loads that fails on NaN/Infinity, as a browser's JSON.parse does."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


class KTAdd:
    CATEGORY, RETURN_TYPES, FUNCTION, DESCRIPTION = "test", ("INT",), "run", "Adds one."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"tooltip": "in"})}}

    def run(self, value):
        return (value + 1,)


class KTNaN:
    """An output node whose ui holds NaN (a node's numbers are not Kinema's to trust)."""
    CATEGORY, RETURN_TYPES, FUNCTION, OUTPUT_NODE, DESCRIPTION = "test", (), "run", True, "Shows NaN."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"tooltip": "in"})}}

    def run(self, value):
        return {"ui": {"numbers": [value, float("nan"), float("inf")]}, "result": ()}


class KTNoise:
    """`steps` live previews of 512x512 noise (~0.5 MB of JPEG each): what a slow client cannot keep up with."""
    CATEGORY, RETURN_TYPES, FUNCTION, DESCRIPTION = "test", ("INT",), "run", "Noisy previews."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"tooltip": "in"}),
                             "steps": ("INT", {"default": 3, "min": 1, "max": 1000, "tooltip": "previews"})}}

    def run(self, value, steps):
        import PIL.Image
        from kinema.nodes import env
        progress = env.Progress(steps)
        for i in range(steps):
            progress(i + 1, PIL.Image.frombytes("RGB", (512, 512), os.urandom(512 * 512 * 3)))
        return (value,)


NODES = {**TEST_NODES, "KTAdd": KTAdd, "KTNaN": KTNaN, "KTNoise": KTNoise}


def run_app(folders, fn, nodes=None, **kw):
    app = make_app(Executor(nodes or NODES, {}), user_dir=folders["user"], **kw)

    async def main():
        async with TestClient(TestServer(app)) as client:
            return await fn(client, app[SERVER])
    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------------------------
# Finding 4: Origin and Host
# ---------------------------------------------------------------------------------------------------------------
def test_refusal_rule():
    ok, host = None, "127.0.0.1:8188"
    assert refusal({"Host": host}, True) is ok                                       # curl, scripts
    assert refusal({"Host": host, "Origin": "http://127.0.0.1:8188"}, True) is ok    # the editor itself
    assert refusal({"Host": "localhost:8188", "Origin": "http://localhost:8188"}, True) is ok
    assert refusal({"Host": "[::1]:8188", "Origin": "http://[::1]:8188"}, True) is ok
    assert refusal({"Host": host, "Origin": "http://127.0.0.1"}, True) is ok         # ComfyUI: no port, names only
    for origin in (EVIL, "null", "http://127.0.0.1:9999", "http://localhost:8188", "file://"):
        assert refusal({"Host": host, "Origin": origin}, True), origin
    assert "cross-site" in refusal({"Host": host, "Sec-Fetch-Site": "cross-site"}, True)
    for rebound in ("evil.example", "evil.example:8188", "127.0.0.1.nip.io:8188", "0.0.0.0:8188"):
        assert "Host header" in refusal({"Host": rebound}, True), rebound                 # DNS rebinding
        assert "Host header" in refusal({"Host": rebound, "Origin": f"http://{rebound}"}, True)
    assert refusal({"Host": "192.168.1.5:8188"}, False) is ok                         # --host 0.0.0.0: LAN names
    assert refusal({"Host": "192.168.1.5:8188", "Origin": EVIL}, False)               # ... still same-origin


def test_hostile_origin_and_rebinding_are_refused(folders):
    png = _png()

    async def check(c, srv):
        hostile = {"Origin": EVIL}
        body, form = _form(png, "evil.png")
        attempts = [
            ("POST", "/api/prompt", {"json": {"prompt": graph(), "client_id": "x"}}),
            ("POST", "/prompt", {"data": json.dumps({"prompt": graph()}), "headers": {"Content-Type": "text/plain"}}),
            ("POST", "/api/upload/image", {"data": body, "headers": form}),
            ("POST", "/api/userdata/workflows%2Fevil.json", {"data": "{}"}),
            ("POST", "/api/settings/Comfy.Evil", {"data": "1"}),
            ("POST", "/api/settings", {"data": '{"Comfy.Evil": 1}'}),
            ("POST", "/api/interrupt", {}),
            ("POST", "/api/queue", {"json": {"clear": True}}),
            ("POST", "/api/free", {"json": {"free_memory": True}}),
        ]
        for origin in (EVIL, "null"):
            for method, path, kw in attempts:
                headers = {**kw.get("headers", {}), "Origin": origin}
                r = await c.request(method, URL(path, encoded=True), **{**kw, "headers": headers})
                assert r.status == 403, (origin, path, r.status)
                assert "Forbidden" in (await r.json())["error"]
        with pytest.raises(WSServerHandshakeError) as refused:
            await c.ws_connect("/ws?clientId=evil", headers=hostile)
        assert refused.value.status == 403
        rebinding = {"Host": f"evil.example:{c.port}"}
        for path in ("/", "/api/userdata?dir=workflows", "/api/history", "/api/view?filename=a.png"):
            assert (await c.get(path, headers=rebinding)).status == 403, path
        assert (await c.get("/api/history", headers={"Sec-Fetch-Site": "cross-site"})).status == 403
        # nothing happened
        assert srv.jobs.all_jobs() == [] and await (await c.get("/api/settings")).json() == {}
        assert not (folders["user"] / "default" / "workflows").exists() and not list(folders["input"].iterdir())
        # the editor's own page (same origin) and scripts without an Origin still work
        own = {"Origin": f"http://127.0.0.1:{c.port}"}
        assert (await c.post("/api/settings/Comfy.Locale", data='"en"', headers=own)).status == 200
        ws, _, _ = await connect(c)
        pid = await queue(c, graph())
        msgs, _ = await until_done(ws, pid)
        assert "execution_success" in types(msgs)
        ws2 = await c.ws_connect("/ws?clientId=own", headers={**own, "Host": f"localhost:{c.port}",
                                                               "Origin": f"http://localhost:{c.port}"})
        assert (await ws2.receive_json(timeout=5))["type"] == "status"
        await ws2.close()
    run_app(folders, check)


# ---------------------------------------------------------------------------------------------------------------
# Findings 2 and 3: WebSocket clients
# ---------------------------------------------------------------------------------------------------------------
def never_reading_client(port: int, client_id: str) -> socket.socket:
    """A WebSocket that connects and then never reads: a tiny receive buffer, the handshake, nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert b"101" in sock.recv(4096).split(b"\r\n")[0]
    return sock


def test_a_client_that_stops_reading_is_dropped_and_the_others_go_on(folders, caplog):
    """Before: one dispatcher awaited each send, so the stalled socket blocked every client's events. Now each client
    has its own bounded queue and sender; the stalled one is dropped."""
    async def check(c, srv):
        ws, _, _ = await connect(c, "reader")
        slow = await asyncio.to_thread(never_reading_client, c.port, "slow")
        await queue(c, {"1": {"class_type": "KTValue", "inputs": {"value": 1}},
                        "2": {"class_type": "KTNoise", "inputs": {"value": ["1", 0], "steps": 120}},
                        "3": {"class_type": "KTSave", "inputs": {"value": ["2", 0]}}}, cid="slow")  # ~60 MB
        start = time.monotonic()
        for value in (5, 6):
            msgs, _ = await until_done(ws, await queue(c, graph(value=value), cid="reader"), timeout=60)
            assert "execution_success" in types(msgs)
        assert time.monotonic() - start < 45                       # a margin no busy machine reaches
        assert "slow" not in srv.clients.clients and "reader" in srv.clients.clients
        assert any("stopped reading" in r.getMessage() for r in caplog.records)
        ws2, status, _ = await connect(c, "newcomer")               # new clients still get their status
        assert status["type"] == "status"
        slow.close()
    run_app(folders, check)


def test_a_lagging_client_gets_the_latest_progress_not_every_one(folders):
    """A big graph's progress_state is the whole state map (~0.6 MB at 3000 nodes): a client that lags gets the
    newest one in place of the one still waiting, so it is not dropped for progress alone; anything else still
    counts against its bound."""
    async def check(c, srv):
        lag = await asyncio.to_thread(never_reading_client, c.port, "lag")
        nodes = {str(i): {"state": "finished", "value": 1, "max": 1, "pad": "x" * 100} for i in range(1000)}
        for step in range(200):                                     # 200 x ~0.15 MB = 30 MB of states
            srv.clients.post("progress_state", {"prompt_id": "p", "nodes": {**nodes, "step": step}}, "lag")
        await asyncio.sleep(1.0)
        client = srv.clients.clients.get("lag")
        assert client is not None and client.queued_bytes < 3 << 20, "dropped for progress alone"
        for _ in range(200):                                        # other messages are not coalesced
            srv.clients.post("status", {"pad": "y" * 150_000}, "lag")
        await asyncio.sleep(1.0)
        assert "lag" not in srv.clients.clients
        lag.close()
    run_app(folders, check)


def test_client_id_must_be_a_string_and_one_bad_message_stops_nothing(folders):
    """Before: a list client_id was accepted (200) and then killed the dispatcher: no events to anyone."""
    async def check(c, srv):
        ws, _, _ = await connect(c)
        for bad in ([1], {"a": 1}, 5, "x" * 300):
            r = await c.post("/api/prompt", json={"prompt": graph(), "client_id": bad})
            body = await r.json()
            assert r.status == 400 and "client_id" in body["error"]["message"], bad
        r = await c.post("/api/prompt", json={"prompt": graph(), "prompt_id": ["p"]})
        assert r.status == 400 and "prompt_id" in (await r.json())["error"]["message"]
        srv.post("status", {"x": 1}, ["unhashable"])                # what the worker would have posted
        srv.post("status", {"x": object()}, "tester")               # a payload json cannot encode
        msgs, _ = await until_done(ws, await queue(c, graph()))
        assert "execution_success" in types(msgs)
    run_app(folders, check)


# ---------------------------------------------------------------------------------------------------------------
# Finding 6: NaN and extra_data
# ---------------------------------------------------------------------------------------------------------------
def test_nan_is_refused_at_parse_and_never_emitted(folders):
    async def check(c, srv):
        ws, _, _ = await connect(c)
        good = json.dumps({"prompt": graph(), "client_id": "tester"})
        for bad in ('"number": NaN', '"number": Infinity', '"number": -Infinity', '"number": 1e999'):
            r = await c.post("/api/prompt", data=good[:-1] + ", " + bad + "}")
            body = await r.json()
            assert r.status == 400 and "finite" in body["error"]["details"], (bad, body)
        r = await c.post("/api/settings/X", data="NaN")
        assert r.status == 400
        for extra in ({"extra_pnginfo": [1]}, {"extra_pnginfo": "x"}, {"extra_pnginfo": {"workflow": "wf"}},
                      {"extra_pnginfo": {"workflow": [1, 2]}}):
            r = await c.post("/api/prompt", json={"prompt": graph(), "extra_data": extra})
            assert r.status == 400 and "extra_pnginfo" in (await r.json())["error"]["message"], extra
        shown = {"1": {"class_type": "KTValue", "inputs": {"value": 4}},
                 "2": {"class_type": "KTNaN", "inputs": {"value": ["1", 0]}}}
        pid = await queue(c, shown)
        while True:                                                 # every WebSocket event is strict JSON
            m = await ws.receive(timeout=30)
            if m.type == aiohttp.WSMsgType.TEXT:
                event = strict_json(m.data)
                if event["type"] == "executed":
                    assert event["data"]["output"] == {"numbers": [4, None, None]}
                if event["type"] == "executing" and event["data"]["node"] is None:
                    break
        for path in ("/api/queue", "/api/jobs", "/api/history", f"/api/history/{pid}", f"/api/jobs/{pid}"):
            r = await c.get(path)
            assert r.status == 200, path
            strict_json(await r.text())
    run_app(folders, check)


# ---------------------------------------------------------------------------------------------------------------
# Finding 7: ComfyUI-shaped 4xx, never 500
# ---------------------------------------------------------------------------------------------------------------
def test_hostile_inputs_get_4xx_not_500(folders):
    root = folders["user"] / "default"

    async def check(c, srv):
        png = _png()
        long_name = "a" * 300 + ".png"
        assert (await c.get("/api/view", params={"filename": long_name})).status == 400
        assert (await c.get("/api/view", params={"filename": "a.png", "subfolder": "/".join(["b" * 250] * 20)})
                ).status == 400
        r = await c.post(URL("/api/userdata/" + "w" * 300 + ".json", encoded=True), data="{}")
        assert r.status == 400 and "bytes" in (await r.json())["error"]
        body, headers = _form(png, "é" * 200 + ".png")              # 400 bytes of name: shortened, not refused
        r = await c.post("/api/upload/image", data=body, headers=headers)
        name = (await r.json())["name"]
        assert r.status == 200 and len(name.encode()) <= 200 and (folders["input"] / name).is_file()
        body, headers = _form(png, "a\x00b.png")
        assert (await c.post("/api/upload/image", data=body, headers=headers)).status == 400
        body, headers = _form(png, "ok.png", subfolder="s" * 100_000)     # form fields are not read whole
        r = await c.post("/api/upload/image", data=body, headers=headers)
        assert r.status == 400 and "longer than" in (await r.json())["error"]
        (folders["input"] / "taken.png").mkdir()
        body, headers = _form(png, "taken.png", overwrite="true")
        assert (await c.post("/api/upload/image", data=body, headers=headers)).status == 409
        assert (await c.post("/api/userdata/x.json", data="{}")).status == 200
        (root / "folder.json").mkdir()
        r = await c.post("/api/userdata/x.json/move/folder.json?overwrite=true")
        assert r.status == 409 and (root / "x.json").is_file()
        r = await c.post("/api/prompt", json={"prompt": {"1": {"class_type": ["KTSave"], "inputs": {}}}})
        assert r.status == 400 and (await r.json())["error"]["type"] == "invalid_prompt"
        r = await c.post("/api/prompt", data="[" * 100_000 + "]" * 100_000)
        assert r.status == 400 and "nested too deep" in (await r.json())["error"]["details"]
        nested = {"prompt": graph(), "extra_data": {"extra_pnginfo": {"workflow": {"deep": _nest(300)}}}}
        r = await c.post("/api/prompt", json=nested)
        assert r.status == 400 and "nested too deep" in (await r.json())["error"]["details"]
        r = await c.post("/api/prompt", data=b"x" * (64 * 1024 * 1024 + 1), headers={"Content-Type": "text/plain"})
        assert r.status == 413 and "limit" in (await r.json())["error"]["details"]
        r = await c.post("/api/userdata/big.json", data=b"x" * (64 * 1024 * 1024 + 1))
        assert r.status == 413 and r.content_type == "application/json"
        ws, _, _ = await connect(c)                                 # a 3000-node chain validates and runs
        chain = {"1": {"class_type": "KTValue", "inputs": {"value": 0}}}
        for i in range(2, 3002):
            chain[str(i)] = {"class_type": "KTAdd", "inputs": {"value": [str(i - 1), 0]}}
        chain["3002"] = {"class_type": "KTSave", "inputs": {"value": ["3001", 0]}}
        msgs, _ = await until_done(ws, await queue(c, chain), timeout=120)
        assert of(msgs, "executed")[0]["output"]["images"][0]["filename"].startswith("kt_3000_")
    run_app(folders, check)


def _nest(depth: int):
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


# ---------------------------------------------------------------------------------------------------------------
# Finding 19: the history keeps what the editor needs, bounded
# ---------------------------------------------------------------------------------------------------------------
def test_history_keeps_the_workflow_and_forgets_the_rest_within_its_budget(folders, monkeypatch):
    """Before: every request body was kept whole (8 x 50 MB extra_data: +600 MB, a 400 MB /api/history)."""
    monkeypatch.setattr(jobs_mod, "MAX_HISTORY_BYTES", 400_000)
    monkeypatch.setattr(jobs_mod, "MAX_KEPT_WORKFLOW_BYTES", 100_000)

    async def check(c, srv):
        ws, _, _ = await connect(c)
        junk = "j" * 2_000_000
        kept = await queue(c, graph(value=1), extra_data={"extra_pnginfo": {"workflow": {"id": "wf", "nodes": []}},
                                                          "junk": junk})
        await until_done(ws, kept)
        entry = (await (await c.get(f"/api/history/{kept}")).json())[kept]
        assert entry["prompt"][3]["extra_pnginfo"] == {"workflow": {"id": "wf", "nodes": []}}
        assert "junk" not in entry["prompt"][3]
        assert (await (await c.get(f"/api/jobs/{kept}")).json())["workflow_id"] == "wf"
        huge = await queue(c, graph(value=2), extra_data={"extra_pnginfo": {"workflow": {"id": "big", "x": junk}}})
        await until_done(ws, huge)
        assert "extra_pnginfo" not in (await (await c.get(f"/api/history/{huge}")).json())[huge]["prompt"][3]
        titled = []
        for value in range(3, 12):                                  # 9 jobs of ~150 KB prompts: the oldest go
            prompt = graph(value=value)
            prompt["1"]["_meta"] = {"title": "t" * 150_000}
            titled.append(await queue(c, prompt))
            await until_done(ws, titled[-1])
        history = await c.get("/api/history")
        assert len(await history.read()) < 400_000 + 150_000
        assert srv.jobs.history_bytes <= 400_000 + 200_000
        assert titled[-1] in await history.json() and kept not in await history.json()
    run_app(folders, check)


# ---------------------------------------------------------------------------------------------------------------
# Finding 10: temp files a killed run left behind
# ---------------------------------------------------------------------------------------------------------------
def test_stale_temp_files_are_removed_when_the_server_starts(folders):
    old = time.time() - 2 * 3600
    user = folders["user"] / "default"
    (folders["output"] / "Kinema").mkdir()
    (user / "workflows").mkdir(parents=True)
    stale = [folders["output"] / "Kinema" / ".video_00001_.0a1b2c3d.part.mp4", folders["input"] / ".upload.k2j_x9a1.tmp",
             user / "workflows" / ".flow.json.ab12_9zq.tmp", folders["temp"] / ".preview_00003_.deadbeef.part.webp"]
    kept = [folders["output"] / "Kinema" / ".video_00002_.0a1b2c3e.part.mp4",     # in flight: recent
            folders["output"] / ".keep", user / "workflows" / ".index.json",       # hidden, but not temp files
            folders["output"] / "video_00001_.mp4", folders["input"] / "notes.tmp"]
    for path in stale + kept:
        path.write_bytes(b"x")
        if path != kept[0]:
            os.utime(path, (old, old))

    async def check(c, srv):
        assert (await c.get("/api/prompt")).status == 200
    run_app(folders, check)
    assert [p for p in stale if p.exists()] == [] and all(p.exists() for p in kept)


# ---------------------------------------------------------------------------------------------------------------
# Finding 5: an unreadable model_index.json
# ---------------------------------------------------------------------------------------------------------------
def test_an_unreadable_model_index_does_not_stop_the_server(folders, tmp_path):
    """Before: /object_info and /prompt answered 500 (and `kinema serve` would not start)."""
    import kinema
    from kinema.nodes import env
    from test_cli import _broken_models
    models = _broken_models(tmp_path / "models")
    ex = Executor(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS,
                  folders=env.folders().replace(models=models))

    async def check(c, srv):
        r = await c.get("/api/object_info")
        assert r.status == 200
        names = (await r.json())["KinemaLoadVideoModel"]["input"]["required"]["model"][0]
        assert "kinema-tiny-video" in names and "broken" not in names and "listish" not in names
        r = await c.post("/api/prompt", json={"prompt": {"1": {"class_type": "KinemaLoadVideoModel", "inputs": {
            "model": "broken", "family": "auto", "device": "cpu", "dtype": "auto"}}, "2": {
            "class_type": "KinemaTextEncode", "inputs": {"model": ["1", 0], "text": "x"}}}})
        assert r.status == 400                                      # not offered, so not accepted: no 500
    app = make_app(ex, user_dir=folders["user"])

    async def main():
        async with TestClient(TestServer(app)) as client:
            await check(client, app[SERVER])
    asyncio.run(main())
