"""The pack inside a real ComfyUI: loads, lists ComfyUI's own model folders and the bundled assets, runs the files
workflow with its models handed to ComfyUI's memory manager, survives "Unload models", and stops on interrupt.

Needs a ComfyUI checkout and a Python that runs it (KINEMA_COMFYUI, KINEMA_COMFYUI_PYTHON; default
/work/comfyref/ComfyUI and /work/comfyref/.venv/bin/python); skipped without them (CI has no ComfyUI:
tests/nodes/test_inside_comfy.py covers the same calls with a stand-in). ComfyUI runs with --cpu from a temporary
--base-directory whose custom_nodes/ holds only this pack and whose models/ holds the `kinema fixtures` files."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

import kinema
from kinema.host.ui_to_api import ui_to_api
from kinema.models.media import read_video_info

REPO = Path(__file__).resolve().parents[2]
COMFY = Path(os.environ.get("KINEMA_COMFYUI", "/work/comfyref/ComfyUI"))
PYTHON = Path(os.environ.get("KINEMA_COMFYUI_PYTHON", "/work/comfyref/.venv/bin/python"))
EXTRA_PATH = os.environ.get("KINEMA_COMFYUI_PYTHONPATH", "")     # e.g. Kinema's requirements installed aside


def _can_run_pack() -> bool:
    """A ComfyUI checkout, and its Python can import Kinema's requirements (pip install -r requirements.txt)."""
    if not ((COMFY / "main.py").is_file() and PYTHON.is_file()):
        return False
    code = "import av, diffusers, ftfy, google.protobuf, safetensors, soundfile, transformers"
    return subprocess.run([str(PYTHON), "-c", code], env={**os.environ, "PYTHONPATH": EXTRA_PATH},
                          capture_output=True, timeout=120).returncode == 0


pytestmark = [pytest.mark.slow, pytest.mark.skipif(not _can_run_pack(), reason=(
    "no ComfyUI (KINEMA_COMFYUI, KINEMA_COMFYUI_PYTHON) with Kinema's requirements (KINEMA_COMFYUI_PYTHONPATH)"))]
WORKFLOW = REPO / "workflows" / "text_to_video_wan_files.json"


class Comfy:
    def __init__(self, base: Path, port: int, proc: subprocess.Popen, log: Path):
        self.base, self.url, self.proc, self.log = base, f"http://127.0.0.1:{port}", proc, log

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict):
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
        return json.loads(text) if text.strip() else None

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and \
                    entry["status"].get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish; log:\n{self.log.read_text()[-3000:]}")

    def queue(self, prompt: dict) -> str:
        return self.post("/prompt", {"prompt": prompt, "client_id": "kinema-test"})["prompt_id"]


@pytest.fixture(scope="module")
def comfy(models_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-kinema").symlink_to(REPO)
    for folder in ("diffusion_models", "text_encoders", "vae"):
        (base / "models" / folder).mkdir(parents=True)
        for f in (models_dir / folder).glob("*.safetensors"):
            (base / "models" / folder / f.name).symlink_to(f)
    (base / "input").mkdir()
    (base / "web").mkdir()        # no editor needed: the API only (the frontend package need not be installed)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = base / "comfyui.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": EXTRA_PATH}
    with open(log, "w") as out:
        proc = subprocess.Popen([str(PYTHON), str(COMFY / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port",
                                 str(port), "--base-directory", str(base), "--disable-auto-launch",
                                 "--front-end-root", str(base / "web")],
                                cwd=COMFY, stdout=out, stderr=subprocess.STDOUT, env=env)
    c = Comfy(base, port, proc, log)
    try:
        end = time.monotonic() + 180
        while True:
            try:
                c.info = c.get("/object_info")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > end:
                    raise AssertionError(f"ComfyUI did not start:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        yield c
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _ok(entry: dict) -> None:
    last = entry["status"]["messages"][-1][1]
    assert entry["status"]["status_str"] == "success", (last.get("exception_message"), last.get("traceback"))


def _prompt(comfy, **changes) -> dict:
    prompt = ui_to_api(json.loads(WORKFLOW.read_text()), comfy.info)
    sampler = next(n for n in prompt.values() if n["class_type"] == "KinemaTemporalSampler")
    sampler["inputs"].update(changes)
    return prompt


def test_pack_loads_with_comfys_folders_and_the_bundled_assets(comfy):
    log = comfy.log.read_text()
    assert "IMPORT FAILED" not in log, log[-4000:]
    assert set(kinema.NODE_CLASS_MAPPINGS) <= set(comfy.info)
    files = comfy.info["KinemaLoadModelFiles"]["input"]["required"]
    assert "fixture_wan_t2v.safetensors" in files["denoiser"][0]            # from ComfyUI's models/ folders
    assert "fixture_umt5.safetensors" in files["text_encoder"][0]
    assert "fixture_wan_2.1_vae.safetensors" in files["vae"][0]
    assert {"sprite.png", "scene.png"} <= set(comfy.info["KinemaLoadImage"]["input"]["required"]["image"][0])
    assert not [p for p in (comfy.base / "input").rglob("*") if p.is_file()]  # nothing copied into input/


def test_files_workflow_runs_under_comfys_memory_manager(comfy):
    entry = comfy.wait(comfy.queue(_prompt(comfy)))
    _ok(entry)
    saved = [i for out in entry["outputs"].values() for i in out.get("images", [])]
    info = read_video_info(comfy.base / "output" / saved[0]["subfolder"] / saved[0]["filename"])
    assert (info.frames, info.width, info.height) == (17, 64, 64)
    assert comfy.log.read_text().count("Requested to load WanFamily") == 1    # registered in ComfyUI's manager
    # "Unload models" (the editor's button): ComfyUI unloads Kinema's model; the sampler loads it back
    comfy.post("/free", {"unload_models": True, "free_memory": True})
    _ok(comfy.wait(comfy.queue(_prompt(comfy, seed=43))))
    assert comfy.log.read_text().count("Requested to load WanFamily") == 2


def test_stop_interrupts_a_kinema_run(comfy):
    prompt_id = comfy.queue(_prompt(comfy, steps=1000, seed=44))
    end = time.monotonic() + 120
    while not comfy.get("/queue")["queue_running"] and time.monotonic() < end:
        time.sleep(0.2)
    time.sleep(3)
    comfy.post("/interrupt", {})
    entry = comfy.wait(prompt_id, timeout=120)
    assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"]), entry["status"]
