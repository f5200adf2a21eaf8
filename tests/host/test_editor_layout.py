"""What a person sees in the editor, in headless Chromium at 1400x900 against `kinema serve` (frontend 1.58.1):
a first visit opens text_to_video (not an empty canvas) with the template browser one click away and every
template's thumbnail showing; every shipped workflow opens with all its nodes inside the window and no two nodes'
boxes overlapping, and still none after a run has filled the previews and players (the Kinema-Tiny workflows run;
the fixture ones only load).

One screenshot per workflow is saved to $KINEMA_SCREENSHOTS when set, else to pytest's tmp dir. Every Kinema-Tiny
workflow runs, each in a test of its own (a minute at most on 2 quiet cores: talking_portrait and
video_with_sound_tiny are the longest).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.host.test_browser import HARMLESS_404, REPO, browser, dismiss_dialogs, editor  # noqa: F401

pytestmark = pytest.mark.browser

WINDOW = {"width": 1400, "height": 900}
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
SIDEBAR, TABS = 56, 40            # px of the window the editor's left sidebar and tab bar cover


def _bundled_only(ui: dict) -> bool:
    from tools.make_thumbnails import fixtures_used
    return not fixtures_used(ui)


RUNS = [p for p in WORKFLOWS if _bundled_only(json.loads(p.read_text()))]    # the Kinema-Tiny workflows


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("KINEMA_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _fresh_page(browser):  # noqa: F811
    page = browser.new_page(viewport=WINDOW)            # a new context: no cookies, no local storage
    page.errors, page.failed, page.fetched = [], [], []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("response", lambda r: (page.failed if r.status >= 400 else page.fetched).append(
        f"{r.status} {r.url}" if r.status >= 400 else r.url))
    return page


def _boxes(page) -> dict:
    """The live graph: the view (scale, offset) and each node's rendered box in graph units (title bar included)."""
    return page.evaluate("""() => {
        const c = window.app.canvas;
        const map = document.querySelector('[data-testid=minimap-container]')?.getBoundingClientRect();
        return {scale: c.ds.scale, offset: [...c.ds.offset], width: c.canvas.clientWidth, height: c.canvas.clientHeight,
                minimap: map && map.width ? [map.left, map.top, map.right, map.bottom] : null,
                nodes: window.app.graph.nodes.map(n => ({id: n.id, title: n.title, box: [...n.boundingRect]}))};
    }""")


def _check_layout(view: dict, name: str, when: str, minimap: bool = True) -> None:
    """No two nodes' boxes overlap; each lies inside the window, clear of the sidebar, the tab bar and (unless
    `minimap` is False: the editor chose that view itself) the minimap."""
    nodes, s, (ox, oy) = view["nodes"], view["scale"], view["offset"]
    for i, a in enumerate(nodes):
        ax, ay, aw, ah = a["box"]
        for b in nodes[i + 1:]:
            bx, by, bw, bh = b["box"]
            assert not (ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah), \
                f"{name} ({when}): {a['title']} overlaps {b['title']}: {a['box']} / {b['box']}"
        left, top = (ax + ox) * s, (ay + oy) * s
        right, bottom = (ax + aw + ox) * s, (ay + ah + oy) * s
        assert left >= SIDEBAR and top >= TABS and right <= view["width"] and bottom <= view["height"], \
            f"{name} ({when}): {a['title']} is outside the initial view: " \
            f"{[round(v) for v in (left, top, right, bottom)]}"
        if minimap and view["minimap"]:
            mx0, my0, mx1, my1 = view["minimap"]
            assert not (left < mx1 and mx0 < right and top < my1 and my0 < bottom), \
                f"{name} ({when}): {a['title']} is under the minimap {view['minimap']}"


def test_first_visit_opens_text_to_video_with_templates_one_click_away(editor, browser, shots):  # noqa: F811
    url, _ = editor
    expected = json.loads((REPO / "workflows" / "text_to_video.json").read_text())
    page = _fresh_page(browser)
    try:
        page.goto(url + "/")
        page.wait_for_function("(n) => window.app?.graph?.nodes?.length === n", arg=len(expected["nodes"]),
                               timeout=90_000)
        types = page.evaluate("() => window.app.graph.nodes.map(n => n.type).sort()")
        assert types == sorted(n["type"] for n in expected["nodes"])
        time.sleep(1.0)
        assert page.locator("[role=dialog]:visible").count() == 0       # no dialog over the first screen
        # the editor fits a template into its window itself: every node inside, drawn in full (not the
        # simplified look it uses below ~57 % zoom)
        _check_layout(_boxes(page), "text_to_video", "first screen", minimap=False)
        assert not page.evaluate("() => window.app.canvas.low_quality")
        assert page.get_by_role("button", name="Run", exact=True).first.is_enabled()
        page.screenshot(path=str(shots / "first_screen.png"))
        # one click: the template browser, Kinema's templates with their pictures (the frontend fetches each
        # /api/workflow_templates/kinema/<name>.jpg and shows it from a blob: URL)
        page.get_by_role("button", name="Templates").first.click()
        page.get_by_text("kinema", exact=True).first.click()
        page.wait_for_function("""() => [...document.querySelectorAll('[role=dialog] img')]
            .filter(i => i.complete && i.naturalWidth >= 128).length >= 8""", timeout=30_000)
        fetched = {r.split("/kinema/")[1] for r in page.fetched if "/workflow_templates/kinema/" in r}
        assert len({f for f in fetched if f.endswith(".jpg")}) >= 8, fetched
        page.screenshot(path=str(shots / "templates.png"))
        # inside ComfyUI the same files come from a static route that names them image/jpeg by their suffix: the
        # browser decodes the animated WebP by its content all the same
        data = (REPO / "workflows" / "text_to_video.jpg").read_bytes()
        page.route("**/as-comfyui/text_to_video.jpg", lambda route: route.fulfill(body=data, content_type="image/jpeg"))
        size = page.evaluate("""async () => { const img = new Image(); img.src = '/as-comfyui/text_to_video.jpg';
            await img.decode(); return [img.naturalWidth, img.naturalHeight]; }""")
        assert min(size) >= 128
        assert not page.errors, page.errors
        assert not [f for f in page.failed if not HARMLESS_404.search(f)], page.failed
    finally:
        page.close()


def _open(page, path: Path) -> tuple[str, dict]:
    """Load a workflow as the editor opens one, wait for its input previews; check the stored view is used."""
    name, ui = path.stem, json.loads(path.read_text())
    page.evaluate("([wf, name]) => window.app.loadGraphData(wf, true, true, name)", [ui, name])
    page.wait_for_function("(n) => window.app.graph.nodes.length === n", arg=len(ui["nodes"]))
    page.wait_for_function("(s) => Math.abs(window.app.canvas.ds.scale - s) < 1e-6", arg=ui["extra"]["ds"]["scale"],
                           timeout=15_000)
    time.sleep(0.8)                                       # previews of the inputs (image, video, audio) load
    view = _boxes(page)
    assert view["scale"] == pytest.approx(ui["extra"]["ds"]["scale"])             # the stored view is used
    _check_layout(view, name, "opened")
    return name, ui


def _editor_page(url, browser, warm_up: Path | None = None):  # noqa: F811
    """A first visit: wait until the text_to_video template it opens has loaded and been fitted (else that load can
    finish after, and re-fit, the workflow a test opens next); then open `warm_up` as a person would first."""
    page = _fresh_page(browser)
    page.goto(url + "/")
    first = json.loads((REPO / "workflows" / "text_to_video.json").read_text())
    page.wait_for_function("(n) => window.app?.graph?.nodes?.length === n && window.app.api?.clientId",
                           arg=len(first["nodes"]), timeout=90_000)
    dismiss_dialogs(page, quiet_s=1.0)
    time.sleep(1.0)                                       # the template link's fit-to-view runs after the load
    if warm_up is not None:
        _open(page, warm_up)
    return page


def _clean(page) -> None:
    assert not page.errors, page.errors
    assert not [f for f in page.failed if not HARMLESS_404.search(f)], page.failed


def test_every_workflow_opens_fitted_and_nothing_overlaps(editor, browser, shots):  # noqa: F811
    url, _ = editor
    page = _editor_page(url, browser)
    try:
        for path in WORKFLOWS:
            name, _ = _open(page, path)
            page.screenshot(path=str(shots / f"{name}.png"))
        _clean(page)
    finally:
        page.close()


def test_kinema_tiny_workflows_exist():
    assert {"text_to_video", "talking_portrait", "upscale_video"} <= {p.stem for p in RUNS}


@pytest.mark.parametrize("path", RUNS, ids=[p.stem for p in RUNS])
def test_nothing_overlaps_after_a_run(editor, browser, shots, path):  # noqa: F811
    url, _ = editor
    page = _editor_page(url, browser, warm_up=next(p for p in WORKFLOWS if p != path))
    try:
        page.evaluate("""() => { window.__done = null; const api = window.app.api;
            api.addEventListener('execution_success', () => window.__done = 'ok');
            api.addEventListener('execution_error', (e) => window.__done = e.detail); }""")
        name, _ = _open(page, path)
        page.get_by_role("button", name="Run", exact=True).first.click()
        page.wait_for_function("() => window.__done", timeout=400_000, polling=200)
        assert page.evaluate("() => window.__done") == "ok", page.evaluate("() => window.__done")
        page.wait_for_function("""() => [...document.querySelectorAll('video')].some(v => v.readyState >= 1)
            || [...document.querySelectorAll('img')].some(i => i.src.includes('type=output') && i.complete)""",
                               timeout=30_000)
        time.sleep(1.5)                                   # players and previews take their size
        _check_layout(_boxes(page), name, "after its run")
        page.screenshot(path=str(shots / f"{name}.after_run.png"))
        _clean(page)
    finally:
        page.close()
