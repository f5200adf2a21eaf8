"""`kinema serve`'s template routes as the ComfyUI frontend (1.58.1) uses them: the template list, each workflow and
its thumbnail at /api/workflow_templates/kinema/<name>.jpg (the address the frontend builds for a custom-node
template), and the first screen: a browser's first visit opens text_to_video through the frontend's own
?template= link."""
from __future__ import annotations

import io
import json

from PIL import Image

from kinema.host import server as srv_mod
from tests.host.test_server import app_factory, folders, session  # noqa: F401  (fixtures)


def test_every_template_has_a_thumbnail_served_as_the_frontend_asks(app_factory):  # noqa: F811
    async def check(c):
        names = (await (await c.get("/api/workflow_templates")).json())["kinema"]
        assert "text_to_video" in names and len(names) == len(list(srv_mod.WORKFLOWS_DIR.glob("*.json")))
        for name in names:
            r = await c.get(f"/api/workflow_templates/kinema/{name}.jpg")
            assert r.status == 200, name
            data = await r.read()
            with Image.open(io.BytesIO(data)) as im:           # a real picture, of the type the header says
                assert r.content_type == Image.MIME[im.format], (name, r.content_type, im.format)
                assert im.width >= 128 and im.height >= 128
        assert (await c.get("/api/workflow_templates/kinema/no_such.jpg")).status == 404
        assert (await c.get("/api/workflow_templates/kinema/..%2F..%2Fpyproject.jpg")).status in (400, 404)
    session(app_factory(), check)


def test_a_first_visit_opens_text_to_video_then_the_browser_keeps_its_own(app_factory):  # noqa: F811
    async def check(c):
        r = await c.get("/", allow_redirects=False)
        assert r.status == 302
        assert r.headers["Location"] == "/?template=text_to_video&source=kinema"
        assert srv_mod.FIRST_SEEN_COOKIE in r.cookies
        # the frontend then fetches the template the link names: a workflow it can load
        wf = json.loads(await (await c.get("/api/workflow_templates/kinema/text_to_video.json")).read())
        assert wf["nodes"] and wf["extra"]["ds"]["scale"] > 0
        # the same browser (it has the cookie now) gets the editor itself, and keeps what it has open
        r = await c.get("/", allow_redirects=False)
        assert r.status == 200 and "<title>ComfyUI</title>" in await r.text()
        # a link that names its own template or query is never redirected
        c.session.cookie_jar.clear()
        r = await c.get("/?template=long_video&source=kinema", allow_redirects=False)
        assert r.status == 200
    session(app_factory(), check)
