"""End to end in headless Chromium: `kinema serve` on a free loopback port, the real ComfyUI frontend (1.58.1)
loads, finds every Kinema node, runs workflows/animated_sticker.json on the tiny fixture models with progress and
live previews, and shows the result.

Needs Debian's `chromium` (apt-get install chromium) and Python `playwright` (pip install playwright); Playwright
drives the system Chromium, so `playwright install` is never run. Skipped, with the reason, when either is missing.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STICKER = REPO / "workflows" / "animated_sticker.json"
# what the editor asks for and handles when missing, as with ComfyUI: no user.css, no saved workflows yet, no
# model browser, no template thumbnails
HARMLESS_404 = re.compile(r"^404 \S+/(user\.css|api/userdata/user\.css|api/userdata\?dir=\w+&\S*|"
                          r"api/userdata/comfy\.templates\.json|api/experiment/models|"
                          r"api/workflow_templates/kinema/\w+\.jpg)$")


def _missing() -> str | None:
    if not Path(CHROMIUM).is_file():
        return "Debian's chromium is not installed (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "Python playwright is not installed (pip install playwright; it drives /usr/bin/chromium)"
    return None


if _missing():
    pytest.skip(_missing(), allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def editor(models_dir, tmp_path_factory):
    """`kinema serve` in a subprocess on a free loopback port, with fresh folders; yields (url, folders)."""
    root = tmp_path_factory.mktemp("serve")
    dirs = {k: root / k for k in ("input", "output", "temp")}
    port = _free_port()
    env = dict(os.environ, KINEMA_TEMP_DIR=str(dirs["temp"]), KINEMA_USER_DIR=str(root / "user"),
               TOKENIZERS_PARALLELISM="false")
    log = open(root / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "kinema.host.cli", "serve", "--port", str(port),
                             "--models-dir", str(models_dir), "--input-dir", str(dirs["input"]),
                             "--output-dir", str(dirs["output"])],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/api/features", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"kinema serve did not start:\n{(root / 'serve.log').read_text()}")
            time.sleep(0.2)
    yield url, dirs
    proc.terminate()                    # SIGTERM: aiohttp shuts down cleanly
    try:
        assert proc.wait(30) == 0, (root / "serve.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def open_editor(browser, url):
    """A page with the editor loaded (app, graph, canvas and the WebSocket client id ready)."""
    page = browser.new_page(viewport={"width": 1600, "height": 1300})
    page.errors, page.failed = [], []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("response", lambda r: page.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(url + "/")
    page.wait_for_function("() => window.app?.graph && window.app.canvas && window.app.api?.clientId",
                           timeout=90_000)
    assert "user-select" not in page.url and "login" not in page.url      # single user: no login screen
    dismiss_dialogs(page)
    return page


def dismiss_dialogs(page, quiet_s: float = 2.0, limit_s: float = 20.0) -> None:
    """Close start-up dialogs (the first-run templates browser; in a fresh browser after that, the editor's
    default graph of core nodes that Kinema does not have) until none has shown for `quiet_s`."""
    quiet_since = start = time.monotonic()
    while time.monotonic() - quiet_since < quiet_s and time.monotonic() - start < limit_s:
        if page.locator("[role=dialog]:visible").count():
            page.keyboard.press("Escape")
            quiet_since = time.monotonic()
        time.sleep(0.25)


def test_editor_runs_the_sticker_workflow(editor, browser, tmp_path, record_property):
    url, dirs = editor
    workflow = json.loads(STICKER.read_text())
    page = open_editor(browser, url)
    try:
        # every node type of the workflow is known to the editor (no missing-nodes dialog)
        types = sorted({n["type"] for n in workflow["nodes"] if n["type"] != "Note"})
        known = page.evaluate("(ts) => ts.filter(t => t in LiteGraph.registered_node_types)", types)
        assert known == types
        page.evaluate("(wf) => window.app.loadGraphData(wf, true, true, 'animated_sticker')", workflow)
        page.wait_for_function("() => window.app.graph.nodes.length > 5")
        page.evaluate("""() => {
            window.__seen = {progress: 0, preview: 0, executing: 0, success: 0, error: null};
            const api = window.app.api;
            api.addEventListener('progress', () => window.__seen.progress++);
            api.addEventListener('b_preview_with_metadata', () => window.__seen.preview++);
            api.addEventListener('executing', () => window.__seen.executing++);
            api.addEventListener('execution_success', () => window.__seen.success++);
            api.addEventListener('execution_error', (e) => window.__seen.error = e.detail);
        }""")
        save_id = next(n["id"] for n in workflow["nodes"] if n["type"] == "KinemaSaveVideo")

        start = time.perf_counter()
        page.get_by_role("button", name="Run", exact=True).first.click()
        page.wait_for_function(
            "(id) => window.__seen.error || window.app.nodeOutputs?.[String(id)]?.images?.length",
            arg=save_id, timeout=240_000, polling=100)
        seconds = time.perf_counter() - start
        seen = page.evaluate("() => window.__seen")
        assert seen["error"] is None, seen["error"]
        record_property("queue_to_result_s", round(seconds, 2))
        print(f"\nanimated_sticker on fixtures: {seconds:.1f} s from Run to the result in the editor")
        (tmp_path / "timing.txt").write_text(f"{seconds:.2f}\n")

        output = page.evaluate("(id) => window.app.nodeOutputs[String(id)]", save_id)
        item = output["images"][0]
        assert output["animated"] == [True] and item["type"] == "output" and item["filename"].endswith(".webp")
        assert (dirs["output"] / item["subfolder"] / item["filename"]).is_file()
        page.wait_for_function("() => window.__seen.success > 0")
        assert seen["progress"] >= 1 and seen["preview"] >= 1 and seen["executing"] >= 1   # step progress
        # the result is shown: an <img> of the saved file in the page, served by /api/view
        img = page.wait_for_selector(f"img[src*='{item['filename']}']", timeout=30_000)
        src = img.get_attribute("src")
        assert "/api/view?" in src
        page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=img, timeout=30_000)
        page.evaluate("""(id) => {                  // the output node at 100 %, left of centre
            const canvas = window.app.canvas, node = window.app.graph.getNodeById(id);
            canvas.ds.scale = 1;
            canvas.ds.offset[0] = -node.pos[0] + 900; canvas.ds.offset[1] = -node.pos[1] + 300;
            canvas.setDirty(true, true);
        }""", save_id)
        time.sleep(0.5)
        page.screenshot(path=str(tmp_path / "sticker.png"))
        assert (tmp_path / "sticker.png").stat().st_size > 10_000
        jobs = json.loads(urllib.request.urlopen(url + "/api/jobs?status=completed").read())["jobs"]
        assert jobs and jobs[0]["preview_output"]["filename"] == item["filename"]
        assert not page.errors, page.errors
        assert not [f for f in page.failed if not HARMLESS_404.search(f)], page.failed
    finally:
        page.close()


def test_node_library_lists_every_kinema_node(editor, browser, tmp_path):
    url, _ = editor
    info = json.loads(urllib.request.urlopen(url + "/api/object_info").read())
    kinema = {name: d for name, d in info.items() if name.startswith("Kinema")}
    from kinema import NODE_CLASS_MAPPINGS
    assert set(kinema) == set(NODE_CLASS_MAPPINGS)
    page = open_editor(browser, url)
    try:
        # the editor registered every node with its description and input tooltips
        defs = page.evaluate("""(names) => Object.fromEntries(names.map(n => {
            const d = LiteGraph.registered_node_types[n]?.nodeData;
            return [n, d && {title: d.display_name, description: d.description,
                             input: {...(d.input?.required || {}), ...(d.input?.optional || {})}}];
        }))""", sorted(kinema))
        for name, d in defs.items():
            assert d is not None, f"{name} is not registered in the editor"
            assert d["title"] == kinema[name]["display_name"] and d["description"]
            ours = {**kinema[name]["input"].get("required", {}), **kinema[name]["input"].get("optional", {})}
            for inp, spec in d["input"].items():
                if inp not in ours:      # the upload button the frontend adds (its AUDIOUPLOAD has no tooltip)
                    assert inp == "upload" and spec[0] in ("IMAGEUPLOAD", "AUDIOUPLOAD"), (name, inp, spec)
                    continue
                assert spec[1]["tooltip"], f"{name}.{inp}"
        # and the node library shows them under Kinema: expand every folder of the Kinema tree
        page.get_by_role("button", name="Node Library (n)").click()
        page.get_by_role("treeitem", name="Kinema", exact=True).click()
        for _ in range(30):
            closed = page.locator("[role=treeitem][aria-expanded=false]").filter(
                has_not_text="utilities")
            if closed.count() == 0:
                break
            closed.first.click()
        text = page.locator("[role=tree]").all_inner_texts()
        listed = "\n".join(text)
        for name, d in kinema.items():
            assert d["display_name"] in listed, f"{d['display_name']} ({name}) is not in the node library"
        # hovering a node shows its preview card with the description
        page.get_by_role("treeitem", name="Temporal Sampler").hover()
        page.get_by_text(kinema["KinemaTemporalSampler"]["description"][:40]).first.wait_for(timeout=10_000)
        page.screenshot(path=str(tmp_path / "node_library.png"))
    finally:
        page.close()


def test_editor_plays_the_text_to_audio_result(editor, browser, tmp_path):
    """Frontend 1.58.1 shows {"audio": [...]} in the node's `audioUI` <audio> player (uploadAudio.ts): the Save
    Audio node declares it, and after the run the player's src is /api/view of the saved flac."""
    url, dirs = editor
    workflow = json.loads((REPO / "workflows" / "text_to_audio.json").read_text())
    page = open_editor(browser, url)
    try:
        page.evaluate("(wf) => window.app.loadGraphData(wf, true, true, 'text_to_audio')", workflow)
        page.wait_for_function("() => window.app.graph.nodes.length >= 3")
        save_id = next(n["id"] for n in workflow["nodes"] if n["type"] == "KinemaSaveAudio")
        widgets = page.evaluate("(id) => window.app.graph.getNodeById(id).widgets.map(w => w.name)", save_id)
        assert "audioUI" in widgets
        # Load Audio's upload button finds its player (it needs `audioUI` to exist before it is built)
        widgets = page.evaluate("() => { const n = LiteGraph.createNode('KinemaLoadAudio'); window.app.graph.add(n);"
                                " return n.widgets.map(w => w.name); }")
        assert {"audio", "audioUI", "upload"} <= set(widgets), widgets
        page.evaluate("() => { window.__error = null; window.app.api.addEventListener('execution_error', "
                      "(e) => window.__error = e.detail); }")
        page.get_by_role("button", name="Run", exact=True).first.click()
        page.wait_for_function("(id) => window.__error || window.app.nodeOutputs?.[String(id)]?.audio?.length",
                               arg=save_id, timeout=240_000, polling=100)
        assert page.evaluate("() => window.__error") is None
        item = page.evaluate("(id) => window.app.nodeOutputs[String(id)].audio[0]", save_id)
        assert item["type"] == "output" and item["filename"].endswith(".flac")
        assert (dirs["output"] / item["subfolder"] / item["filename"]).is_file()
        audio = page.wait_for_selector(f"audio[src*='{item['filename']}']", state="attached", timeout=30_000)
        assert "/api/view?" in audio.get_attribute("src")
        page.wait_for_function("(el) => el.readyState >= 1 && el.duration > 0.9", arg=audio, timeout=30_000)
        assert not page.errors, page.errors
        assert not [f for f in page.failed if not HARMLESS_404.search(f)], page.failed
    finally:
        page.close()
