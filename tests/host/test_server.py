"""host/server.py: every route the editor calls, error shapes, confinement of files, uploads, and runs over the
WebSocket (events, previews, failures, interrupt, caching), with aiohttp's test client and no browser.

Most runs use tiny test nodes defined here (instant, controllable); one test runs the real Kinema nodes on the tiny
fixture models.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import time

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import FormData, WSMsgType  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from yarl import URL  # noqa: E402

from kinema.host.executor import Executor  # noqa: E402
from kinema.host import server as srv_mod  # noqa: E402
from kinema.host.server import make_app  # noqa: E402
from kinema.nodes import env  # noqa: E402

RUNS: dict[str, int] = {}


def _count(name: str) -> None:
    RUNS[name] = RUNS.get(name, 0) + 1


# ---------------------------------------------------------------------------------------------------------------
# Tiny test nodes
# ---------------------------------------------------------------------------------------------------------------
class KTValue:
    CATEGORY, RETURN_TYPES, FUNCTION, DESCRIPTION = "test", ("INT",), "run", "A number."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 100, "tooltip": "a number"})}}

    def run(self, value):
        _count("KTValue")
        return (value,)


class KTSteps:
    """Counts `steps` with progress and a preview per step; `delay` seconds a step."""
    CATEGORY, RETURN_TYPES, FUNCTION, DESCRIPTION = "test", ("INT",), "run", "Steps with previews."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"tooltip": "in"}),
                             "steps": ("INT", {"default": 3, "min": 1, "max": 10000, "tooltip": "steps"}),
                             "delay": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "tooltip": "s/step"})}}

    def run(self, value, steps, delay):
        import PIL.Image
        _count("KTSteps")
        progress = env.Progress(steps)
        for i in range(steps):
            time.sleep(delay)
            progress(i + 1, PIL.Image.new("RGB", (16, 8), (10 * (i % 20), 100, 0)))
        return (value + 1,)


class KTFail:
    CATEGORY, RETURN_TYPES, FUNCTION, DESCRIPTION = "test", ("INT",), "run", "Always fails."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"tooltip": "in"})}}

    def run(self, value):
        raise ValueError(f"`value` must be even, got {value}. Use 4.")


class KTCheck:
    """VALIDATE_INPUTS refuses even values before the run (ComfyUI's custom validation at /prompt)."""
    CATEGORY, RETURN_TYPES, FUNCTION, DESCRIPTION = "test", ("INT",), "run", "Odd numbers only."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 100, "tooltip": "odd"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        return True if value % 2 else f"`value` must be odd, got {value}. Use {value + 1}."

    def run(self, value):
        return (value,)


class KTSave:
    CATEGORY, RETURN_TYPES, FUNCTION, DESCRIPTION, OUTPUT_NODE = "test", (), "run", "Saves a PNG.", True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"tooltip": "in"})}}

    def run(self, value):
        import PIL.Image
        _count("KTSave")
        out = env.output_dir()
        out.mkdir(parents=True, exist_ok=True)
        name = f"kt_{value}_{RUNS['KTSave']}.png"
        PIL.Image.new("RGB", (4, 4), (value % 256, 0, 0)).save(out / name)
        return {"ui": {"images": [{"filename": name, "subfolder": "", "type": "output"}]}, "result": ()}


class KTCounted(KTValue):
    """KTValue that counts INPUT_TYPES calls: what building the node list costs (Kinema's loaders scan folders)."""
    calls = 0

    @classmethod
    def INPUT_TYPES(cls):
        cls.calls += 1
        return super().INPUT_TYPES()


TEST_NODES = {"KTValue": KTValue, "KTSteps": KTSteps, "KTFail": KTFail, "KTCheck": KTCheck, "KTSave": KTSave}


def graph(value=3, steps=3, delay=0.0, fail=False) -> dict:
    return {"1": {"class_type": "KTValue", "inputs": {"value": value}},
            "2": {"class_type": "KTSteps", "inputs": {"value": ["1", 0], "steps": steps, "delay": delay}},
            "3": {"class_type": "KTFail" if fail else "KTSave", "inputs": {"value": ["2", 0]}},
            **({"4": {"class_type": "KTSave", "inputs": {"value": ["3", 0]}}} if fail else {})}


# ---------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def folders(tmp_path):
    """Fresh input/output/temp/user folders for the nodes and the server; the previous settings restored after."""
    dirs = {k: tmp_path / k for k in ("input", "output", "temp", "user")}
    for d in dirs.values():
        d.mkdir()
    with env.using(env.Folders.of(input=dirs["input"], output=dirs["output"], temp=dirs["temp"])):
        yield dirs


@pytest.fixture
def app_factory(folders):
    def make(nodes=None, **kw):
        executor = Executor(nodes or TEST_NODES, {})
        return make_app(executor, user_dir=kw.pop("user_dir", folders["user"]), **kw)
    return make


def session(app, fn):
    """Run `await fn(client)` against the app on a test server."""
    async def main():
        async with TestClient(TestServer(app)) as client:
            return await fn(client)
    return asyncio.run(main())


async def connect(client, cid="tester", metadata=True):
    ws = await client.ws_connect(f"/ws?clientId={cid}")
    status = await ws.receive_json(timeout=5)
    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": metadata}})
    flags = await ws.receive_json(timeout=5)
    return ws, status, flags


async def until_done(ws, prompt_id, timeout=60.0):
    """(JSON messages, binary frames) up to the end mark executing {node: None} of prompt_id."""
    msgs, frames = [], []
    end = time.monotonic() + timeout
    while True:
        m = await ws.receive(timeout=max(end - time.monotonic(), 0.1))
        if m.type == WSMsgType.BINARY:
            frames.append(m.data)
            continue
        assert m.type == WSMsgType.TEXT, m
        d = json.loads(m.data)
        msgs.append(d)
        if d["type"] == "executing" and d["data"]["node"] is None and d["data"]["prompt_id"] == prompt_id:
            return msgs, frames


async def queue(client, prompt, cid="tester", **extra):
    r = await client.post("/api/prompt", json={"prompt": prompt, "client_id": cid, **extra})
    body = await r.json()
    assert r.status == 200, body
    return body["prompt_id"]


def types(msgs):
    return [m["type"] for m in msgs]


def of(msgs, kind):
    return [m["data"] for m in msgs if m["type"] == kind]


# ---------------------------------------------------------------------------------------------------------------
# Static files, users, settings, userdata
# ---------------------------------------------------------------------------------------------------------------
def test_serves_the_pinned_frontend(app_factory):
    async def check(c):
        r = await c.get("/")
        html = await r.text()
        assert r.status == 200 and "<title>ComfyUI</title>" in html
        script = html.split('src="./assets/')[1].split('"')[0]
        r = await c.get(f"/assets/{script}")
        assert r.status == 200 and "javascript" in r.content_type
        assert (await c.get("/templates/index.json")).status == 200
        assert (await c.get("/no/such/file.js")).status == 404
    session(app_factory(), check)
    from importlib import metadata
    assert metadata.version("comfyui-frontend-package") == srv_mod.FRONTEND_VERSION == "1.58.1"


def test_users_and_settings_persist(app_factory, folders):
    async def check(c):
        r = await c.get("/api/users")
        assert await r.json() == {"storage": "server", "migrated": True}     # no login screen
        assert await (await c.get("/api/settings")).json() == {}
        assert (await c.post("/api/settings/Comfy.Locale", data=json.dumps("en"))).status == 200
        assert (await c.post("/api/settings", data=json.dumps({"A.b": 1, "C.d": [1, 2]}))).status == 200
        assert await (await c.get("/api/settings/Comfy.Locale")).json() == "en"
        assert await (await c.get("/api/settings/Missing.Id")).json() is None
        r = await c.post("/api/settings/X", data="{not json")
        assert r.status == 400 and "JSON" in (await r.json())["error"]
        assert (await c.post("/api/settings", data="[1]")).status == 400
        assert (await c.get("/settings")).status == 200                     # legacy route
        await c.post("/api/settings/Comfy.TutorialCompleted", data="true")     # see UNSTORED_SETTINGS
        assert await (await c.get("/api/settings/Comfy.TutorialCompleted")).json() is None
    session(app_factory(), check)
    saved = json.loads((folders["user"] / "default" / "comfy.settings.json").read_text())
    assert saved == {"Comfy.Locale": "en", "A.b": 1, "C.d": [1, 2]}
    assert not [p for p in (folders["user"] / "default").iterdir() if p.name.endswith(".tmp")]

    async def reread(c):                                                    # a restarted server reads them back
        assert (await (await c.get("/api/settings")).json())["Comfy.Locale"] == "en"
    session(app_factory(), reread)


def test_userdata_files(app_factory, folders, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text('{"secret": 1}')
    root = folders["user"] / "default"

    async def check(c):
        r = await c.get("/api/userdata", params={"dir": "workflows"})
        assert r.status == 404                                              # the editor expects 404 for none
        wf = {"nodes": [], "links": [], "version": 0.4}
        r = await c.post("/api/userdata/workflows%2Fmy%20flow.json?overwrite=false&full_info=true",
                         data=json.dumps(wf))
        info = await r.json()
        assert r.status == 200 and info["path"] == "workflows/my flow.json" and info["size"] > 0
        assert json.loads((root / "workflows" / "my flow.json").read_text()) == wf
        r = await c.post("/api/userdata/workflows%2Fmy%20flow.json?overwrite=false", data="{}")
        assert r.status == 409
        r = await c.post("/api/userdata/workflows%2F.index.json", data="{}")
        assert r.status == 200 and await r.json() == "workflows/.index.json"
        r = await c.get("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")
        listed = await r.json()
        assert [e["path"] for e in listed] == ["my flow.json"] and "modified" in listed[0]   # no dotfiles
        assert await (await c.get("/api/userdata?dir=workflows")).json() == ["my flow.json"]
        r = await c.get("/api/userdata/workflows%2Fmy%20flow.json")
        assert r.status == 200 and json.loads(await r.read()) == wf
        r = await c.post("/api/userdata/workflows%2Fmy%20flow.json/move/workflows%2Frenamed.json")
        assert r.status == 200 and await r.json() == "workflows/renamed.json"
        assert (await c.get("/api/userdata/workflows%2Fmy%20flow.json")).status == 404
        assert (await c.delete("/api/userdata/workflows%2Frenamed.json")).status == 204
        assert (await c.delete("/api/userdata/workflows%2Frenamed.json")).status == 404
        # confinement
        (root / "escape.json").symlink_to(outside)
        for bad, status in (("..%2F..%2Foutside.json", 400), ("%2Fetc%2Fpasswd", 400),
                            ("workflows%2F..%2F..%2Fx.json", 400), ("escape.json", 403)):
            r = await c.get(URL(f"/api/userdata/{bad}", encoded=True))
            assert r.status == status, bad
            r = await c.post(URL(f"/api/userdata/{bad}", encoded=True), data="{}")
            assert r.status == status, bad
        assert outside.read_text() == '{"secret": 1}'
        assert (await c.get("/api/userdata", params={"dir": "../.."})).status == 400
    session(app_factory(), check)


# ---------------------------------------------------------------------------------------------------------------
# Node definitions and server facts
# ---------------------------------------------------------------------------------------------------------------
def test_object_info_lists_every_kinema_node_with_tooltips(folders):
    from kinema import NODE_CLASS_MAPPINGS

    async def check(c):
        info = await (await c.get("/api/object_info")).json()
        assert set(NODE_CLASS_MAPPINGS) <= set(info)
        for name, d in info.items():
            assert d["name"] == name and d["category"].startswith("Kinema/") and d["description"]
            for section in ("required", "optional"):
                for inp, spec in d["input"].get(section, {}).items():
                    assert spec[1].get("tooltip"), f"{name}.{inp} has no tooltip"
        one = await (await c.get("/api/object_info/KinemaTemporalSampler")).json()
        assert list(one) == ["KinemaTemporalSampler"]
        assert await (await c.get("/api/object_info/NoSuchNode")).json() == {}
        assert set(await (await c.get("/object_info")).json()) == set(info)   # legacy route
    session(make_app(user_dir=folders["user"]), check)


def test_server_facts(app_factory):
    async def check(c):
        assert await (await c.get("/api/extensions")).json() == []
        assert await (await c.get("/api/embeddings")).json() == []
        assert await (await c.get("/api/i18n")).json() == {}
        features = await (await c.get("/api/features")).json()
        assert features == {"supports_preview_metadata": True, "max_upload_size": srv_mod.MAX_UPLOAD_SIZE}
        stats = await (await c.get("/api/system_stats")).json()
        assert {"os", "ram_total", "ram_free", "comfyui_version", "python_version", "pytorch_version",
                "embedded_python", "argv"} <= set(stats["system"])
        assert stats["devices"] and {"name", "type", "vram_total", "vram_free"} <= set(stats["devices"][0])
        assert await (await c.get("/api/prompt")).json() == {"exec_info": {"queue_remaining": 0}}
        assert await (await c.get("/queue")).json() == {"queue_running": [], "queue_pending": []}
        assert await (await c.get("/history")).json() == {}
        jobs = await (await c.get("/api/jobs?status=in_progress,pending&limit=200&offset=0")).json()
        assert jobs == {"jobs": [], "pagination": {"offset": 0, "limit": 200, "total": 0, "has_more": False}}
        assert (await c.get("/api/jobs?status=bogus")).status == 400
        assert (await c.get("/api/jobs/nope")).status == 404
        templates = await (await c.get("/api/workflow_templates")).json()
        for name in templates.get("kinema", []):
            r = await c.get(f"/api/workflow_templates/kinema/{name}.json")
            assert r.status == 200 and "nodes" in json.loads(await r.read())
        assert (await c.get("/api/workflow_templates/kinema/..%2Fpyproject.toml")).status in (400, 404)
    session(app_factory(), check)


def test_serve_binds_loopback_by_default():
    import inspect
    from kinema.host.cli import _parser
    assert inspect.signature(srv_mod.serve).parameters["host"].default == "127.0.0.1"
    assert _parser().parse_args(["serve"]).host == "127.0.0.1"


# ---------------------------------------------------------------------------------------------------------------
# /prompt validation: ComfyUI's error shapes
# ---------------------------------------------------------------------------------------------------------------
def test_prompt_errors(app_factory):
    async def post(c, data):
        r = await c.post("/api/prompt", data=data if isinstance(data, str) else json.dumps(data))
        return r.status, await r.json()

    async def check(c):
        status, body = await post(c, "{not json")
        assert status == 400 and set(body) == {"error", "node_errors"}
        assert set(body["error"]) == {"type", "message", "details", "extra_info"} and body["node_errors"] == {}
        status, body = await post(c, [1, 2])
        assert status == 400 and body["error"]["type"] == "invalid_prompt"
        status, body = await post(c, {"client_id": "x"})
        assert status == 400 and body["error"]["type"] == "no_prompt"

        bad = graph()
        bad["9"] = {"class_type": "NoSuchNode", "inputs": {}}
        status, body = await post(c, {"prompt": bad})
        assert status == 400 and body["node_errors"]["9"]["class_type"] == "NoSuchNode"
        assert "NoSuchNode" in body["error"]["message"]

        bad = graph()
        del bad["2"]["inputs"]["steps"]
        status, body = await post(c, {"prompt": bad})
        assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
        err = body["node_errors"]["2"]
        assert err["class_type"] == "KTSteps" and err["dependent_outputs"] == ["3"]
        assert err["errors"][0]["type"] == "required_input_missing"
        assert err["errors"][0]["extra_info"]["input_name"] == "steps"

        status, body = await post(c, {"prompt": graph(value=1000)})
        e = body["node_errors"]["1"]["errors"][0]
        assert status == 400 and e["type"] == "value_bigger_than_max" and e["extra_info"]["input_name"] == "value"

        status, body = await post(c, {"prompt": {"1": {"class_type": "KTValue", "inputs": {"value": 1}}}})
        assert status == 400 and body["error"]["type"] == "prompt_no_outputs"

        checked = {"1": {"class_type": "KTCheck", "inputs": {"value": 2}},
                   "2": {"class_type": "KTSave", "inputs": {"value": ["1", 0]}}}
        status, body = await post(c, {"prompt": checked})                       # VALIDATE_INPUTS at /prompt
        assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
        e = body["node_errors"]["1"]["errors"][0]
        assert e["type"] == "custom_validation_failed" and e["extra_info"]["input_name"] == "value"
        assert "must be odd, got 2" in e["details"] and body["node_errors"]["1"]["dependent_outputs"] == ["2"]

        checked["3"] = {"class_type": "KTSave", "inputs": {"value": 5}}        # one good output: it runs
        status, body = await post(c, {"prompt": checked})
        assert status == 200 and list(body["node_errors"]) == ["1"]
        queued = (await (await c.get(f"/api/jobs/{body['prompt_id']}")).json())["workflow"]["prompt"]
        assert list(queued) == ["3"]
        status, body = await post(c, {"prompt": graph(), "extra_data": [1]})
        assert status == 400
    session(app_factory(), check)


# ---------------------------------------------------------------------------------------------------------------
# Runs over the WebSocket
# ---------------------------------------------------------------------------------------------------------------
def test_run_events_previews_and_results(app_factory, folders):
    async def check(c):
        ws, status, flags = await connect(c)
        assert status == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                     "sid": "tester"}}
        assert flags["type"] == "feature_flags" and flags["data"]["supports_preview_metadata"] is True
        pid = await queue(c, graph(), extra_data={"extra_pnginfo": {"workflow": {"id": "wf-1"}},
                                                  "api_key_comfy_org": "SECRET"})
        msgs, frames = await until_done(ws, pid)
        kinds = types(msgs)
        for kind in ("execution_start", "execution_cached", "executing", "progress", "progress_state",
                     "executed", "execution_success"):
            assert kind in kinds, kind
        assert kinds.index("execution_start") < kinds.index("executing") < kinds.index("execution_success")
        assert kinds[-3:] == ["execution_success", "status", "executing"]       # ComfyUI's end sequence
        assert [d["node"] for d in of(msgs, "executing")] == ["1", "2", "3", None]
        assert [(p["value"], p["max"], p["node"]) for p in of(msgs, "progress")] == [(1, 3, "2"), (2, 3, "2"),
                                                                                    (3, 3, "2")]
        done = of(msgs, "executed")[0]
        assert done["node"] == "3" and done["output"]["images"][0]["type"] == "output"
        states = of(msgs, "progress_state")
        assert any(s["nodes"].get("2", {}).get("state") == "running" for s in states)
        assert all(n["state"] == "finished" for n in states[-1]["nodes"].values())
        # binary previews: type 4 with metadata (the client asked for it), JPEG
        assert len(frames) == 3
        kind, length = struct.unpack(">II", frames[0][:8])
        meta = json.loads(frames[0][8:8 + length])
        assert kind == 4 and meta["node_id"] == "2" and meta["prompt_id"] == pid
        assert meta["image_type"] == "image/jpeg" and frames[0][8 + length:][:3] == b"\xff\xd8\xff"
        # the result is served by /view, and recorded in history and jobs
        r = await c.get("/api/view", params={"filename": done["output"]["images"][0]["filename"],
                                             "type": "output", "subfolder": ""})
        assert r.status == 200 and r.content_type == "image/png" and (await r.read())[:4] == b"\x89PNG"
        hist = (await (await c.get(f"/api/history/{pid}")).json())[pid]
        assert hist["status"]["status_str"] == "success" and hist["outputs"]["3"] == done["output"]
        assert [m[0] for m in hist["status"]["messages"]] == ["execution_start", "execution_cached",
                                                              "execution_success"]
        assert "api_key_comfy_org" not in hist["prompt"][3]                   # secrets are not kept
        assert list(await (await c.get("/api/history?max_items=1")).json()) == [pid]
        jobs = (await (await c.get("/api/jobs?status=completed,failed,cancelled")).json())["jobs"]
        assert [j["id"] for j in jobs] == [pid]
        job = jobs[0]
        assert job["status"] == "completed" and job["outputs_count"] == 1 and job["workflow_id"] == "wf-1"
        assert job["preview_output"]["nodeId"] == "3" and job["preview_output"]["mediaType"] == "images"
        assert job["execution_start_time"] <= job["execution_end_time"]
        detail = await (await c.get(f"/api/jobs/{pid}")).json()
        assert detail["outputs"]["3"] == done["output"] and detail["workflow"]["prompt"]["1"]["class_type"] == \
            "KTValue"
        await ws.close()
    session(app_factory(), check)


def test_preview_frames_without_metadata_and_per_client(app_factory):
    async def check(c):
        old, _, _ = await connect(c, "old-client", metadata=False)
        other, _, _ = await connect(c, "someone-else")
        pid = await queue(c, graph(steps=2), cid="old-client")
        msgs, frames = await until_done(old, pid)
        assert len(frames) == 2
        kind, fmt = struct.unpack(">II", frames[0][:8])
        assert (kind, fmt) == (1, 1) and frames[0][8:11] == b"\xff\xd8\xff"       # type 1, JPEG
        # the other client sees queue status only, not this job's events
        seen = []
        while True:
            try:
                m = await other.receive(timeout=0.3)
            except asyncio.TimeoutError:
                break
            seen.append(json.loads(m.data)["type"] if m.type == WSMsgType.TEXT else "binary")
        assert seen and set(seen) == {"status"}
    session(app_factory(), check)


def test_second_identical_run_is_cached(app_factory):
    async def check(c):
        ws, _, _ = await connect(c)
        RUNS.clear()
        msgs, _ = await until_done(ws, await queue(c, graph()))
        assert of(msgs, "execution_cached")[0]["nodes"] == []
        assert RUNS == {"KTValue": 1, "KTSteps": 1, "KTSave": 1}
        msgs, frames = await until_done(ws, await queue(c, graph()))
        assert sorted(of(msgs, "execution_cached")[0]["nodes"]) == ["1", "2", "3"]
        assert [d["node"] for d in of(msgs, "executing")] == [None] and not frames
        assert of(msgs, "executed")[0]["node"] == "3"                # cached outputs are still shown
        assert RUNS == {"KTValue": 1, "KTSteps": 1, "KTSave": 1}
        msgs, _ = await until_done(ws, await queue(c, graph(steps=4)))    # change the sampler only
        assert of(msgs, "execution_cached")[0]["nodes"] == ["1"]
        assert RUNS == {"KTValue": 1, "KTSteps": 2, "KTSave": 2}
        assert (await c.post("/api/free", json={"unload_models": True, "free_memory": True})).status == 200
        msgs, _ = await until_done(ws, await queue(c, graph(steps=4)))
        assert of(msgs, "execution_cached")[0]["nodes"] == []
    session(app_factory(), check)


def test_int_id_links_and_one_node_list_per_job(app_factory):
    async def check(c):
        ws, _, _ = await connect(c)
        KTCounted.calls = 0
        prompt = {"1": {"class_type": "KTCounted", "inputs": {"value": 6}},
                  "2": {"class_type": "KTSteps", "inputs": {"value": [1, 0], "steps": 2, "delay": 0.0}},
                  "3": {"class_type": "KTSave", "inputs": {"value": [2, 0]}},
                  "4": {"class_type": "KTSave", "inputs": {"value": [9, 0]}}}     # no node 9: output 4 is left out
        r = await c.post("/api/prompt", json={"prompt": prompt, "client_id": "tester"})
        body = await r.json()
        assert r.status == 200 and list(body["node_errors"]) == ["4"]
        msgs, _ = await until_done(ws, body["prompt_id"])
        assert [d["node"] for d in of(msgs, "executing")] == ["1", "2", "3", None]
        assert of(msgs, "executed")[0]["output"]["images"][0]["filename"].startswith("kt_7_")    # 6 + 1
        queued = (await (await c.get(f"/api/jobs/{body['prompt_id']}")).json())["workflow"]["prompt"]
        assert sorted(queued) == ["1", "2", "3"]
        assert KTCounted.calls == 1                     # validated at /prompt and run with one node list
    session(app_factory({**TEST_NODES, "KTCounted": KTCounted}), check)


def test_failing_job_reports_and_next_job_runs(app_factory):
    async def check(c):
        ws, _, _ = await connect(c)
        bad = await queue(c, graph(value=3, fail=True))
        good = await queue(c, graph(value=5))
        msgs, _ = await until_done(ws, bad)
        err = of(msgs, "execution_error")[0]
        assert err["prompt_id"] == bad and err["node_id"] == "3" and err["node_type"] == "KTFail"
        assert err["exception_type"] == "ValueError" and "must be even, got 4" in err["exception_message"]
        assert any("KTFail" in line or "raise ValueError" in line for line in err["traceback"])
        assert set(err["executed"]) == {"1", "2", "3"} and err["current_inputs"] == {}
        assert "execution_success" not in types(msgs)
        msgs, _ = await until_done(ws, good)
        assert "execution_success" in types(msgs)
        jobs = {j["id"]: j for j in (await (await c.get("/api/jobs")).json())["jobs"]}
        assert jobs[bad]["status"] == "failed" and jobs[bad]["execution_error"]["node_id"] == "3"
        assert jobs[good]["status"] == "completed"
        hist = await (await c.get("/api/history")).json()
        assert hist[bad]["status"]["status_str"] == "error" and hist[bad]["status"]["completed"] is False
    session(app_factory(), check)


def test_interrupt(app_factory):
    async def check(c):
        ws, _, _ = await connect(c)
        slow = await queue(c, graph(steps=3000, delay=0.01))      # at least 30 s unless interrupted
        after = await queue(c, graph(value=7))
        while True:                                                 # wait until it is sampling
            m = await ws.receive(timeout=30)
            if m.type == WSMsgType.TEXT and json.loads(m.data)["type"] == "progress":
                break
        assert (await c.post("/api/interrupt", json={"prompt_id": "not-the-running-one"})).status == 200
        await asyncio.sleep(0.1)
        assert (await (await c.get(f"/api/jobs/{slow}")).json())["status"] == "in_progress"
        t = time.monotonic()
        assert (await c.post("/api/interrupt")).status == 200
        msgs, _ = await until_done(ws, slow)
        # stopped at once: far sooner than the ~29 s the job had left (a margin no machine load crosses)
        assert time.monotonic() - t < 10 and max(p["value"] for p in of(msgs, "progress")) < 3000
        stop = of(msgs, "execution_interrupted")[0]
        assert stop["prompt_id"] == slow and stop["node_id"] == "2" and stop["node_type"] == "KTSteps"
        msgs, _ = await until_done(ws, after)
        assert "execution_success" in types(msgs)
        jobs = {j["id"]: j["status"] for j in (await (await c.get("/api/jobs")).json())["jobs"]}
        assert jobs == {slow: "cancelled", after: "completed"}
    session(app_factory(), check)


def test_queue_jobs_and_history_management(app_factory):
    async def check(c):
        ws, _, _ = await connect(c)
        running = await queue(c, graph(steps=1000, delay=0.01))
        a, b, d = [await queue(c, graph(value=v)) for v in (11, 12, 13)]
        front = await queue(c, graph(value=14), front=True)
        while (await (await c.get(f"/api/jobs/{running}")).json())["status"] != "in_progress":
            await asyncio.sleep(0.05)
        q = await (await c.get("/api/queue")).json()
        assert [i[1] for i in q["queue_running"]] == [running]
        assert [i[1] for i in q["queue_pending"]] == [front, a, b, d]           # front jumps the queue
        assert len(q["queue_pending"][0]) == 5
        assert (await (await c.get("/api/prompt")).json())["exec_info"]["queue_remaining"] == 5
        page = await (await c.get("/api/jobs?status=pending&limit=2&offset=0")).json()
        assert page["pagination"] == {"offset": 0, "limit": 2, "total": 4, "has_more": True}
        assert (await c.post("/api/queue", json={"delete": [a]})).status == 200
        assert (await c.post(f"/api/jobs/{b}/cancel")).status == 200
        assert (await c.post("/api/jobs/nope/cancel")).status == 404
        q = await (await c.get("/api/queue")).json()
        assert [i[1] for i in q["queue_pending"]] == [front, d]
        assert (await c.post("/queue", json={"clear": True})).status == 200
        assert (await (await c.get("/api/queue")).json())["queue_pending"] == []
        r = await c.post("/api/jobs/cancel", json={"job_ids": [running]})        # cancels the running job
        assert await r.json() == {"cancelled": [running]}
        msgs, _ = await until_done(ws, running)
        assert "execution_interrupted" in types(msgs)
        hist = await (await c.get("/api/history")).json()
        assert list(hist) == [running] and hist[running]["status"]["status_str"] == "error"
        assert (await c.post("/api/history", json={"delete": [running]})).status == 200
        assert await (await c.get("/api/history")).json() == {}
        await until_done(ws, await queue(c, graph(value=20)))
        assert (await c.post("/history", json={"clear": True})).status == 200
        assert await (await c.get("/api/history")).json() == {}
        assert (await c.post("/api/queue", data="nope")).status == 400
    session(app_factory(), check)


# ---------------------------------------------------------------------------------------------------------------
# /view: confined to output, input and temp
# ---------------------------------------------------------------------------------------------------------------
def test_view_confinement(app_factory, folders, tmp_path):
    import PIL.Image
    out = folders["output"]
    PIL.Image.new("RGB", (2, 2)).save(out / "a.png")
    (out / "sub").mkdir()
    PIL.Image.new("RGB", (2, 2)).save(out / "sub" / "b.png")
    PIL.Image.new("RGB", (2, 2)).save(folders["input"] / "in.png")
    (out / "page.html").write_text("<script>alert(1)</script>")
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "s.png").write_bytes(b"\x89PNG TOPSECRET")
    (out / "link.png").symlink_to(secret_dir / "s.png")
    (out / "linkdir").symlink_to(secret_dir)

    async def get(c, query):
        return await c.get(URL(f"/api/view?{query}", encoded=True))

    async def check(c):
        r = await get(c, "filename=a.png&type=output&subfolder=")
        assert r.status == 200 and r.content_type == "image/png"
        assert (await get(c, "filename=b.png&subfolder=sub")).status == 200
        assert (await get(c, "filename=in.png&type=input")).status == 200
        assert (await c.get(URL("/view?filename=a.png", encoded=True))).status == 200       # legacy route
        r = await get(c, "filename=page.html")
        assert r.status == 200 and r.headers["Content-Disposition"].startswith("attachment")
        assert r.content_type == "application/octet-stream"
        refused = {
            "filename=../secret/s.png": 400,
            "filename=..%2Fsecret%2Fs.png": 400,                    # separators encoded once
            "filename=%252e%252e%252fsecret%252fs.png": 400,        # and twice
            "filename=..%5Csecret%5Cs.png": 400,
            "filename=%2Fetc%2Fpasswd": 400,
            "filename=s.png&subfolder=..%2Fsecret": 400,
            "filename=s.png&subfolder=sub%2F..%2F..%2Fsecret": 400,
            "filename=passwd&subfolder=%2Fetc": 400,
            "filename=a.png&type=secret": 400,
            "filename=": 400,
            "filename=link.png": 403,                               # symlink leading outside
            "filename=s.png&subfolder=linkdir": 403,
            "filename=missing.png": 404,
        }
        for query, status in refused.items():
            r = await get(c, query)
            assert r.status == status, (query, r.status)
            assert b"TOPSECRET" not in await r.read()
    session(app_factory(), check)


# ---------------------------------------------------------------------------------------------------------------
# Uploads
# ---------------------------------------------------------------------------------------------------------------
def _png(color=(255, 0, 0)) -> bytes:
    import PIL.Image
    buf = io.BytesIO()
    PIL.Image.new("RGB", (3, 3), color).save(buf, format="PNG")
    return buf.getvalue()


def _form(data: bytes, filename: str, **fields) -> tuple[bytes, dict]:
    """A multipart body as a browser's FormData sends it: the file first, the file name raw UTF-8 in quotes."""
    boundary = "----kinemaFormBoundary7MA4YWxk"
    quoted = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{quoted}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    for k, v in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_upload(app_factory, folders):
    inp = folders["input"]

    async def up(c, data, name, **fields):
        body, headers = _form(data, name, **fields)
        r = await c.post("/api/upload/image", data=body, headers=headers)
        return r.status, await r.json()

    async def check(c):
        red, blue, green = _png((255, 0, 0)), _png((0, 0, 255)), _png((0, 255, 0))
        assert await up(c, red, "pic.png") == (200, {"name": "pic.png", "subfolder": "", "type": "input"})
        assert (inp / "pic.png").read_bytes() == red
        assert (await up(c, blue, "pic.png"))[1]["name"] == "pic (1).png"       # never overwritten silently
        assert (inp / "pic.png").read_bytes() == red and (inp / "pic (1).png").read_bytes() == blue
        assert (await up(c, red, "pic.png"))[1]["name"] == "pic.png"            # identical file: reused
        assert (await up(c, green, "pic.png"))[1]["name"] == "pic (2).png"
        assert (await up(c, green, "pic.png", overwrite="true"))[1]["name"] == "pic.png"   # asked for
        assert (inp / "pic.png").read_bytes() == green
        status, body = await up(c, red, "clip.png", type="temp", subfolder="clips/a")
        assert (status, body) == (200, {"name": "clip.png", "subfolder": "clips/a", "type": "temp"})
        assert (folders["temp"] / "clips" / "a" / "clip.png").is_file()
        assert (await up(c, red, "my pic<1>?.png"))[1]["name"] == "my pic_1__.png"        # sanitised
        assert (await up(c, red, ".hidden.png"))[1]["name"] == "hidden.png"
        wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32)
        mp4 = b"\x00\x00\x00\x18ftypisom" + bytes(32)
        webm = b"\x1a\x45\xdf\xa3" + bytes(32)
        for data, name in ((wav, "a.wav"), (mp4, "v.mp4"), (webm, "v.webm"), (b"fLaC" + bytes(8), "a.flac"),
                           (b"ID3\x03" + bytes(8), "a.mp3"), (b"OggS" + bytes(8), "a.ogg"),
                           (b"GIF89a" + bytes(8), "g.gif"), (b"RIFF\0\0\0\0WEBPVP8 ", "w.webp"),
                           (b"\xff\xd8\xff\xe0" + bytes(8), "p.jpg")):
            assert (await up(c, data, name))[0] == 200, name
        # refused
        for data, name, fields, want in (
                (b"MZ\x90\x00" + bytes(8), "tool.exe", {}, 415),
                (b"\xff\xd8\xff\xe0" + bytes(8), "fake.png", {}, 415),        # extension and content disagree
                (b"<svg/>", "x.svg", {}, 415),
                (red, "../evil.png", {}, 400), (red, "a/b.png", {}, 400),
                (red, "..%2Fevil.png", {}, 400), (red, "ok.png", {"subfolder": "../x"}, 400),
                (red, "ok.png", {"subfolder": "/abs"}, 400), (red, "ok.png", {"type": "models"}, 400),
                (red, "ok.png", {"subfolder": "x/../../y"}, 400)):
            status, body = await up(c, data, name, **fields)
            assert status == want and body["error"], (name, fields, status)
        status, body = await up(c, red, "..\\evil.png")        # the multipart parser unescapes the backslash
        assert status == 400 or (body["name"] == "evil.png" and (inp / "evil.png").is_file())
        assert not (folders["input"].parent / "evil.png").exists()
        r = await c.post("/api/upload/image", data=b"plain", headers={"Content-Type": "text/plain"})
        assert r.status == 400
        form = FormData()
        form.add_field("type", "input")
        form.add_field("other", b"x", filename="x.png")
        r = await c.post("/api/upload/image", data=form)            # no `image` file field
        assert r.status == 400
        assert not [p for p in inp.rglob("*") if p.name.endswith(".tmp")]
    session(app_factory(), check)


def test_upload_size_limit(app_factory, folders):
    async def check(c):
        small = _png()
        body, headers = _form(small, "small.png")
        r = await c.post("/upload/image", data=body, headers=headers)
        assert r.status == 200
        body, headers = _form(small + bytes(5000), "big.png")       # a valid PNG header, too many bytes
        r = await c.post("/upload/image", data=body, headers=headers)
        assert r.status == 413 and "limit" in (await r.json())["error"]
        assert not (folders["input"] / "big.png").exists()
    session(app_factory(max_upload_size=2000), check)


def test_upload_size_limit_streaming(app_factory, folders):
    """Without a Content-Length header the limit is enforced on the bytes received."""
    async def check(c):
        big = _png() + bytes(50_000)
        boundary = "kinemaboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + big + f"\r\n--{boundary}--\r\n".encode()

        async def gen():
            for i in range(0, len(body), 4096):
                yield body[i:i + 4096]
        r = await c.post("/api/upload/image", data=gen(),
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert r.status == 413
        assert not (folders["input"] / "big.png").exists()
    session(app_factory(max_upload_size=10_000), check)


# ---------------------------------------------------------------------------------------------------------------
# The real nodes on the tiny fixture models
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_graph_on_fixtures(kinema_dirs):
    from kinema import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from kinema.nodes import media
    classes = {**NODE_CLASS_MAPPINGS, **media.NODE_CLASS_MAPPINGS}
    executor = Executor(classes, {**NODE_DISPLAY_NAME_MAPPINGS, **media.NODE_DISPLAY_NAME_MAPPINGS})
    prompt = {
        "1": {"class_type": "KinemaLoadVideoModel",
              "inputs": {"model": "fixture-wan-t2v", "family": "auto", "device": "cpu", "dtype": "auto"}},
        "2": {"class_type": "KinemaTextEncode", "inputs": {"model": ["1", 0], "text": "a red ball"}},
        "3": {"class_type": "KinemaTextEncode", "inputs": {"model": ["1", 0], "text": ""}},
        "4": {"class_type": "KinemaTemporalSampler",
              "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "length": 5, "width": 32,
                         "height": 32, "steps": 2, "cfg": 5.0, "seed": 1, "scheduler": "default", "shift": 0.0,
                         "denoise": 1.0}},
        "5": {"class_type": "KinemaVideoDecode", "inputs": {"model": ["1", 0], "latent": ["4", 0]}},
        "6": {"class_type": "KinemaSaveVideo",
              "inputs": {"images": ["5", 0], "fps": 8.0, "format": "webp", "filename_prefix": "Kinema/test"}},
    }

    async def check(c):
        ws, _, _ = await connect(c)
        pid = await queue(c, prompt)
        msgs, frames = await until_done(ws, pid, timeout=300)
        assert "execution_success" in types(msgs), of(msgs, "execution_error")
        assert [p["node"] for p in of(msgs, "progress")] == ["4", "4", "5", "5"] and len(frames) == 2  # steps, VAE
        assert struct.unpack(">I", frames[0][:4])[0] == 4
        out = of(msgs, "executed")[0]["output"]
        assert out["animated"] == [True]
        item = out["images"][0]
        r = await c.get("/api/view", params=item)
        assert r.status == 200 and r.content_type == "image/webp"
        assert (kinema_dirs["output"] / item["subfolder"] / item["filename"]).is_file()
        msgs, frames = await until_done(ws, await queue(c, prompt))            # all cached
        assert sorted(of(msgs, "execution_cached")[0]["nodes"]) == ["1", "2", "3", "4", "5", "6"]
        changed = json.loads(json.dumps(prompt))
        changed["4"]["inputs"]["seed"] = 2                                      # only the seed changed
        msgs, _ = await until_done(ws, await queue(c, changed))
        assert sorted(of(msgs, "execution_cached")[0]["nodes"]) == ["1", "2", "3"]
        assert [d["node"] for d in of(msgs, "executing")] == ["4", "5", "6", None]
    session(make_app(executor, user_dir=kinema_dirs["output"].parent / "user"), check)


def test_write_bytes_atomic_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    srv_mod.write_bytes_atomic(target, b"old")

    def boom(*a):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        srv_mod.write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_names():
    assert srv_mod.sanitize_upload_name("ok name (1).png") == "ok name (1).png"
    for bad in ("", ".", "..", "a/b", "a\\b", "a%2fb", "C:x.png", "a\x00b"):
        with pytest.raises(srv_mod.Refused):
            srv_mod.check_name(bad)
    assert srv_mod.check_subfolder("a/b") == ["a", "b"]
    with pytest.raises(srv_mod.Refused):
        srv_mod.check_subfolder("a/../b")


@pytest.mark.slow
def test_kinema_serve_command(tmp_path):
    """`kinema serve` starts on loopback, serves the editor and the API, refuses a port in use, stops on SIGTERM."""
    import socket
    import subprocess
    import sys
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "kinema.host.cli", "serve", "--port", str(port), "--models-dir",
           str(tmp_path / "models"), "--output-dir", str(tmp_path / "output"), "--input-dir", str(tmp_path / "in")]
    env = dict(os.environ, KINEMA_TEMP_DIR=str(tmp_path / "temp"))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.2)
        assert b"<title>ComfyUI</title>" in page
        info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/object_info").read())
        assert "KinemaTemporalSampler" in info
        second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "cannot listen" in second.stderr and "--port" in second.stderr
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/" in out
