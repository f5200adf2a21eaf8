"""`kinema serve`: the official ComfyUI editor (PyPI `comfyui-frontend-package`) on Kinema's own ComfyUI-compatible API.

One aiohttp app: the frontend's static files, the HTTP routes frontend 1.58.1 calls (each under /api/... and, where
ComfyUI has both, without the prefix) and the /ws WebSocket. Graphs run one at a time in the job queue's worker
thread (jobs.py); events reach each WebSocket client in order through its own bounded queue (clients.py).

Safety: binds 127.0.0.1 by default and refuses requests from other sites' pages and DNS rebinding (origin.py);
/view, uploads and userdata are confined to their folders, uploads are size-limited and type-checked, request
bodies are strict JSON (wire.py: no NaN, bounded nesting, MAX_JSON_BODY bytes), and files the server writes are
written atomically (files.py); hidden temp files a killed server left behind are removed when it starts.
"""
from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import os
import platform
import sys
import uuid
from pathlib import Path

from aiohttp import WSMsgType, web

from ..nodes import env
from .clients import Clients
from .executor import Executor
from .files import (MAX_UPLOAD_SIZE, Refused, Settings, check_name, check_subfolder, check_upload_type, confined,
                    file_info, folder_for, inside, receive_upload, remove_stale_temp_files, replace_into,
                    sanitize_upload_name, store_upload, userdata_path, view_headers, write_bytes_atomic)
from .jobs import JOB_STATUSES, JobQueue, error_body
from .origin import is_loopback_bind, origin_guard
from .wire import JSONRefused, dumps, loads

log = logging.getLogger("kinema.server")

FRONTEND_PACKAGE, FRONTEND_VERSION = "comfyui-frontend-package", "1.58.1"
MAX_JSON_BODY = 64 * 1024 * 1024             # bytes of a request body: prompts and saved workflows can be large
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}


# ---------------------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------------------
class KinemaServer:
    """State shared by the routes and the WebSocket clients: the job queue, the clients, settings."""

    def __init__(self, executor: Executor, user_dir: Path, static_dir: Path, max_upload_size: int):
        self.clients = Clients()
        self.jobs = JobQueue(executor, self.clients.post, self.clients.post_preview)
        self.user_root = Path(user_dir).resolve() / "default"
        self.settings = Settings(self.user_root / "comfy.settings.json")
        self.static_dir = static_dir
        self.max_upload_size = max_upload_size
        self.features = {**SERVER_FEATURES, "max_upload_size": max_upload_size}

    # ---- lifecycle -----------------------------------------------------------------------------------------
    async def start(self, app) -> None:
        self.clients.start()
        folders = self.jobs.executor.folders
        await asyncio.to_thread(remove_stale_temp_files, [folders.output, folders.input, folders.temp,
                                                          self.user_root])
        self.jobs.start()

    async def stop(self, app) -> None:
        self.jobs.stop()
        await self.clients.close_all()
        await asyncio.to_thread(self.jobs.join, 10)

    def post(self, kind: str, data, sid: str | None = None) -> None:
        """Queue a JSON message for one client (sid) or everyone (None); callable from any thread."""
        self.clients.post(kind, data, sid)


# ---------------------------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------------------------
SERVER = web.AppKey("kinema_server", KinemaServer)
_ROUTES: list[tuple[str, str, object]] = []


def api(method: str, path: str, *, legacy: bool = True):
    """Register a handler under /api<path> and, as ComfyUI does, under <path>."""
    def wrap(handler):
        _ROUTES.append((method, "/api" + path, handler))
        if legacy:
            _ROUTES.append((method, path, handler))
        return handler
    return wrap


def _srv(request) -> KinemaServer:
    return request.app[SERVER]


def _json_error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


async def _read_body(request) -> bytes:
    """The raw body; Refused(413) past MAX_JSON_BODY (as JSON, not aiohttp's plain-text page)."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Refused(413, f"request body is larger than the limit of {MAX_JSON_BODY} bytes") from None


async def _read_json(request, default=None):
    """The JSON body (strict: wire.loads), or Refused(400/413) naming the problem."""
    raw = await _read_body(request)
    if not raw.strip():
        if default is not None:
            return default
        raise Refused(400, "empty request body; send JSON")
    try:
        return loads(raw)
    except JSONRefused as exc:
        raise Refused(400, str(exc)) from None


def _json(data, status: int = 200) -> web.Response:
    """A JSON response that is always valid JSON (no NaN, unknown objects as text)."""
    return web.json_response(data, status=status, dumps=dumps)


@web.middleware
async def _refusals(request, handler):
    """Refused -> a 4xx with a JSON {"error"}; no-cache on the index and the API."""
    try:
        with env.using(_srv(request).jobs.executor.folders):     # the folders this server was started with
            response = await handler(request)
    except Refused as exc:
        return _json_error(exc.status, str(exc))
    except web.HTTPRequestEntityTooLarge:
        return _json_error(413, f"request body is larger than the limit of {MAX_JSON_BODY} bytes")
    if request.path == "/" or request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-cache")
    return response


# ---- users, settings, userdata --------------------------------------------------------------------------------
@api("GET", "/users")
async def get_users(request):
    return _json({"storage": "server", "migrated": True})      # single user: no login screen


@api("POST", "/users")
async def post_users(request):
    return _json_error(400, "Kinema's server has a single user; there is nothing to create.")


@api("GET", "/settings")
async def get_settings(request):
    return _json(_srv(request).settings.get())


@api("POST", "/settings")
async def post_settings(request):
    values = await _read_json(request)
    if not isinstance(values, dict):
        raise Refused(400, "settings must be a JSON object of id -> value")
    _srv(request).settings.save(values)
    return web.Response(status=200)


@api("GET", "/settings/{id}")
async def get_setting(request):
    return _json(_srv(request).settings.get().get(request.match_info["id"]))


@api("POST", "/settings/{id}")
async def post_setting(request):
    value = await _read_json(request)
    _srv(request).settings.save({request.match_info["id"]: value})
    return web.Response(status=200)


def _userdata_path(request, rel: str, must_exist: bool = False) -> Path:
    return userdata_path(_srv(request).user_root, rel, must_exist)


@api("GET", "/userdata")
async def list_userdata(request):
    srv = _srv(request)
    q = request.query
    directory = q.get("dir", "")
    if not directory:
        raise Refused(400, "give ?dir=<folder> (e.g. workflows)")
    base = confined(srv.user_root, check_subfolder(directory))
    if not base.is_dir():
        raise Refused(404, f"userdata folder {directory!r} does not exist")
    recurse, full, split = (q.get(k, "").lower() in ("true", "1") for k in ("recurse", "full_info", "split"))
    found = []
    for path in sorted(base.rglob("*") if recurse else base.glob("*")):
        rel = path.relative_to(base)
        if not path.is_file() or any(p.startswith(".") for p in rel.parts) or not inside(path, base):
            continue
        if full:
            found.append(file_info(path, base))
        elif split:
            found.append([rel.as_posix(), *rel.parts])
        else:
            found.append(rel.as_posix())
    return _json(found)


@api("GET", "/userdata/{file}")
async def get_userdata(request):
    return web.FileResponse(_userdata_path(request, request.match_info["file"], must_exist=True))


def _flag(request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    return default if value is None else value.lower() in ("true", "1")


def _saved_response(request, path: Path) -> web.Response:
    root = _srv(request).user_root
    if _flag(request, "full_info", False):
        return _json(file_info(path, root))
    return _json(path.relative_to(root).as_posix())


@api("POST", "/userdata/{file}")
async def post_userdata(request):
    path = _userdata_path(request, request.match_info["file"])
    if path.exists() and not _flag(request, "overwrite", True):
        raise Refused(409, f"{request.match_info['file']!r} exists; pass overwrite=true to replace it")
    if path.is_dir():
        raise Refused(409, "a folder of that name exists")
    write_bytes_atomic(path, await _read_body(request))
    return _saved_response(request, path)


@api("DELETE", "/userdata/{file}")
async def delete_userdata(request):
    _userdata_path(request, request.match_info["file"], must_exist=True).unlink()
    return web.Response(status=204)


@api("POST", "/userdata/{file}/move/{dest}")
async def move_userdata(request):
    source = _userdata_path(request, request.match_info["file"], must_exist=True)
    dest = _userdata_path(request, request.match_info["dest"])
    if dest.exists() and not _flag(request, "overwrite", False):
        raise Refused(409, f"{request.match_info['dest']!r} exists; pass overwrite=true to replace it")
    replace_into(source, dest)
    return _saved_response(request, dest)


# ---- node definitions and server facts ------------------------------------------------------------------------
@api("GET", "/extensions")
async def get_extensions(request):
    return _json([])        # the frontend's core extensions are bundled; Kinema ships no web/ folder


@api("GET", "/object_info")
async def get_object_info(request):
    return _json(await asyncio.to_thread(_srv(request).jobs.object_info))


@api("GET", "/object_info/{node_class}")
async def get_object_info_node(request):
    name = request.match_info["node_class"]
    info = await asyncio.to_thread(_srv(request).jobs.object_info)
    return _json({name: info[name]} if name in info else {})


@api("GET", "/embeddings")
async def get_embeddings(request):
    return _json([])


@api("GET", "/features")
async def get_features(request):
    return _json(_srv(request).features)


@api("GET", "/i18n")
async def get_i18n(request):
    return _json({})


WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"
TEMPLATE_MODULE = "kinema"


@api("GET", "/workflow_templates")
async def get_workflow_templates(request):
    """Kinema's workflows/*.json as the editor's custom-node templates (Templates -> kinema)."""
    names = sorted(p.stem for p in WORKFLOWS_DIR.glob("*.json"))     # workflows/ holds workflows only
    return _json({TEMPLATE_MODULE: names} if names else {})


@api("GET", "/workflow_templates/{module}/{name}")
async def get_workflow_template(request):
    if request.match_info["module"] != TEMPLATE_MODULE:
        raise Refused(404, "no such template module")
    path = confined(WORKFLOWS_DIR, [check_name(request.match_info["name"])])
    if path.suffix.lower() not in (".json", ".jpg", ".png", ".webp") or not path.is_file():  # + thumbnails
        raise Refused(404, "no such template")
    kind = mimetypes.guess_type(path.name)[0] or "text/plain"
    if path.suffix.lower() == ".jpg":   # the thumbnail the editor asks for as <name>.jpg: JPEG or animated WebP
        with path.open("rb") as f:
            head = f.read(12)
        kind = "image/webp" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else kind
    return web.FileResponse(path, headers={"Content-Type": kind})


@api("GET", "/global_subgraphs")
async def get_global_subgraphs(request):
    return _json({})


def _system_stats() -> dict:
    from importlib import metadata
    try:
        import psutil
        ram_total, ram_free = psutil.virtual_memory().total, psutil.virtual_memory().available
    except ImportError:
        ram_total = ram_free = 0
    import torch
    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            devices.append({"name": f"cuda:{i} {torch.cuda.get_device_name(i)}", "type": "cuda", "index": i,
                            "vram_total": total, "vram_free": free, "torch_vram_total": total,
                            "torch_vram_free": free})
    else:
        devices.append({"name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total,
                        "vram_free": ram_free, "torch_vram_total": 0, "torch_vram_free": 0})
    try:
        version = metadata.version("comfyui-kinema")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"system": {"os": sys.platform, "ram_total": ram_total, "ram_free": ram_free,
                       "comfyui_version": f"kinema-{version}", "required_frontend_version": FRONTEND_VERSION,
                       "python_version": sys.version, "pytorch_version": torch.__version__,
                       "embedded_python": False, "argv": sys.argv, "platform": platform.platform()},
            "devices": devices}


@api("GET", "/system_stats")
async def get_system_stats(request):
    return _json(await asyncio.to_thread(_system_stats))


# ---- running graphs -------------------------------------------------------------------------------------------
@api("POST", "/prompt")
async def post_prompt(request):
    try:
        body = await _read_json(request)
    except Refused as exc:
        return _json(error_body("invalid_prompt", "Invalid request body", str(exc)), status=exc.status)
    if not isinstance(body, dict):
        return _json(error_body("invalid_prompt", "Invalid request body",
                                "the body must be a JSON object with a `prompt`"), status=400)
    status, response = await asyncio.to_thread(_srv(request).jobs.submit, body)
    return _json(response, status=status)


@api("GET", "/prompt")
async def get_prompt(request):
    return _json(_srv(request).jobs.queue_info())


@api("GET", "/queue")
async def get_queue(request):
    return _json(_srv(request).jobs.queue())


async def _clear_or_delete(request) -> dict:
    """The body of POST /queue and POST /history: {"clear": true} and/or {"delete": [ids]}."""
    body = await _read_json(request, default={})
    if not isinstance(body, dict):
        raise Refused(400, 'send {"clear": true} or {"delete": [ids]}')
    return body


@api("POST", "/queue")
async def post_queue(request):
    body = await _clear_or_delete(request)
    jobs = _srv(request).jobs
    if body.get("clear"):
        jobs.delete_pending()
    if isinstance(body.get("delete"), list):
        jobs.delete_pending([str(i) for i in body["delete"]])
    return web.Response(status=200)


@api("GET", "/history")
async def get_history(request):
    jobs = _srv(request).jobs
    try:
        max_items = int(request.query["max_items"]) if "max_items" in request.query else None
        offset = int(request.query.get("offset", 0))
    except ValueError:
        raise Refused(400, "max_items and offset must be integers") from None
    with jobs.cond:
        done = list(jobs.history.values())          # oldest first
    if "offset" in request.query:
        done = done[offset:] if max_items is None else done[offset:offset + max_items]
    elif max_items is not None:
        done = done[max(len(done) - max_items, 0):] if max_items > 0 else []     # the latest max_items
    return _json({j.id: j.history_entry() for j in done})


@api("GET", "/history/{prompt_id}")
async def get_history_item(request):
    job = _srv(request).jobs.history.get(request.match_info["prompt_id"])
    return _json({job.id: job.history_entry()} if job else {})


@api("POST", "/history")
async def post_history(request):
    body = await _clear_or_delete(request)
    jobs = _srv(request).jobs
    if body.get("clear"):
        jobs.delete_history()
    jobs.delete_history([str(pid) for pid in body.get("delete") or []])
    return web.Response(status=200)


@api("GET", "/jobs")
async def get_jobs(request):
    q = request.query
    wanted = [s for s in q.get("status", "").split(",") if s] or list(JOB_STATUSES)
    if any(s not in JOB_STATUSES for s in wanted):
        raise Refused(400, f"status must be a comma list of {', '.join(JOB_STATUSES)}")
    try:
        limit = int(q["limit"]) if q.get("limit") else None
        offset = int(q.get("offset") or 0)
    except ValueError:
        raise Refused(400, "limit and offset must be integers") from None
    if (limit is not None and limit < 0) or offset < 0:
        raise Refused(400, "limit and offset must be >= 0")
    sort_by, order = q.get("sort_by", "create_time"), q.get("sort_order", "desc")
    jobs = [j.summary() for j in _srv(request).jobs.all_jobs() if j.status in wanted]
    if sort_by == "execution_duration":
        key = lambda j: (j["execution_end_time"] or 0) - (j["execution_start_time"] or 0)  # noqa: E731
    else:
        key = lambda j: j["create_time"]  # noqa: E731
    jobs.sort(key=key, reverse=order != "asc")
    total = len(jobs)
    page = jobs[offset:] if limit is None else jobs[offset:offset + limit]
    return _json({"jobs": page, "pagination": {
        "offset": offset, "limit": limit if limit is not None else total, "total": total,
        "has_more": offset + len(page) < total}})


@api("GET", "/jobs/{job_id}")
async def get_job(request):
    job = _srv(request).jobs.find(request.match_info["job_id"])
    if job is None:
        raise Refused(404, "job not found")
    return _json(job.summary(detail=True))


@api("POST", "/jobs/{job_id}/cancel")
async def cancel_job(request):
    if not _srv(request).jobs.cancel(request.match_info["job_id"]):
        raise Refused(404, "job not found")
    return _json({"id": request.match_info["job_id"], "cancelled": True})


@api("POST", "/jobs/cancel")
async def cancel_jobs(request):
    body = await _read_json(request)
    ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list):
        raise Refused(400, 'send {"job_ids": [ids]}')
    return _json({"cancelled": [str(i) for i in ids if _srv(request).jobs.cancel(str(i))]})


@api("POST", "/interrupt")
async def post_interrupt(request):
    body = await _read_json(request, default={})
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    _srv(request).jobs.interrupt(prompt_id)
    return web.Response(status=200)


@api("POST", "/free")
async def post_free(request):
    body = await _read_json(request, default={})
    if isinstance(body, dict) and (body.get("unload_models") or body.get("free_memory")):
        await asyncio.to_thread(_srv(request).jobs.free_memory)
    return web.Response(status=200)


# ---- files ----------------------------------------------------------------------------------------------------
@api("GET", "/view")
async def view(request):
    q = request.query
    name = check_name(q.get("filename", ""))
    parts = [*check_subfolder(q.get("subfolder", "")), name]
    kind = q.get("type") or "output"
    # inputs are looked up where the Load nodes look: the input folder, then e.g. the bundled workflows' assets
    bases = env.input_search_dirs() if kind == "input" else [folder_for(kind)]
    path = next((p for p in (confined(base, parts) for base in bases) if p.is_file()), None)
    if path is None:
        raise Refused(404, f"{name!r} not found")
    return web.FileResponse(path, headers=view_headers(path, name))


@api("POST", "/upload/image")
async def upload_image(request):
    srv = _srv(request)
    if request.content_length is not None and request.content_length > srv.max_upload_size + (1 << 20):
        raise Refused(413, f"upload is larger than the limit of {srv.max_upload_size} bytes")
    if not request.content_type.startswith("multipart/"):
        raise Refused(400, "send multipart/form-data with an `image` file field")
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError) as exc:
        raise Refused(400, f"the multipart body cannot be read: {exc}") from None
    fields: dict[str, str] = {}
    spool, filename = None, None
    try:
        while (part := await _next_part(reader)) is not None:
            if part.name == "image" and part.filename is not None:
                if spool is not None:
                    raise Refused(400, "send one `image` file per request")
                filename = part.filename
                spool, _ = await receive_upload(part, srv.max_upload_size)
            elif part.name in ("type", "subfolder", "overwrite"):
                fields[part.name] = await _small_field(part)
        if spool is None:
            raise Refused(400, "no `image` file field in the upload")
        name = sanitize_upload_name(filename or "")
        head = spool.read(16)
        spool.seek(0)
        check_upload_type(name, head)
        kind = fields.get("type") or "input"
        subfolder = fields.get("subfolder", "")
        folder = confined(folder_for(kind), check_subfolder(subfolder))
        overwrite = fields.get("overwrite", "").lower() in ("true", "1")
        final = await asyncio.to_thread(store_upload, spool, name, folder, overwrite)
    finally:
        if spool is not None:
            spool.close()
    return _json({"name": final, "subfolder": "/".join(check_subfolder(subfolder)), "type": kind})


async def _small_field(part, limit: int = 4096) -> str:
    """A short form field's text; Refused(400) past `limit` bytes (never read whole into memory)."""
    data = b""
    while chunk := await part.read_chunk(1024):
        data += chunk
        if len(data) > limit:
            raise Refused(400, f"the upload's `{part.name}` field is longer than {limit} bytes")
    return data.decode("utf-8", "replace")


async def _next_part(reader):
    """The next multipart part; Refused(400) for a malformed one (a NUL or bad header in a part's headers)."""
    from aiohttp.http_exceptions import HttpProcessingError
    try:
        return await reader.next()
    except (HttpProcessingError, ValueError) as exc:
        said = (getattr(exc, "message", "") or str(exc)).strip().splitlines()
        raise Refused(400, f"the upload's multipart body is malformed ({said[0][:200] if said else type(exc).__name__})"
                      f"; send the file name without control characters") from None


# ---- WebSocket ------------------------------------------------------------------------------------------------
async def websocket(request):
    srv = _srv(request)
    ws = web.WebSocketResponse(max_msg_size=1 << 20)
    await ws.prepare(request)
    sid = request.query.get("clientId") or uuid.uuid4().hex
    client, old = srv.clients.connect(sid, ws, request.transport)
    if old is not None:                 # a reconnecting tab keeps its id: its old socket is closed
        try:
            await asyncio.wait_for(old.ws.close(), 2)
        except asyncio.TimeoutError:
            srv.clients.drop(old)
    try:
        srv.post("status", {"status": srv.jobs.queue_info(), "sid": sid}, sid)
        running = srv.jobs.running
        if running is not None and running.client_id == sid and running.current_node:
            srv.post("executing", {"node": running.current_node, "display_node": running.current_node,
                                   "prompt_id": running.id}, sid)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("type") == "feature_flags" and not client.got_flags:
                client.flags = data.get("data") if isinstance(data.get("data"), dict) else {}
                client.got_flags = True
                srv.post("feature_flags", srv.features, sid)
    finally:
        srv.clients.disconnect(client)
    return ws


# ---- static frontend ------------------------------------------------------------------------------------------
def frontend_dir() -> Path:
    """The static folder of the pinned comfyui-frontend-package; RuntimeError with the fix when missing."""
    try:
        import comfyui_frontend_package
    except ImportError:
        raise RuntimeError(f"the editor's files are not installed. Fix: pip install "
                           f"{FRONTEND_PACKAGE}=={FRONTEND_VERSION} (or pip install -e '.[server]').") from None
    from importlib import metadata
    try:
        installed = metadata.version(FRONTEND_PACKAGE)
    except metadata.PackageNotFoundError:
        installed = "unknown"
    if installed != FRONTEND_VERSION:
        log.warning("%s %s is installed; Kinema's server is tested with %s (pip install %s==%s)",
                    FRONTEND_PACKAGE, installed, FRONTEND_VERSION, FRONTEND_PACKAGE, FRONTEND_VERSION)
    static = Path(comfyui_frontend_package.__file__).parent / "static"
    if not (static / "index.html").is_file():
        raise RuntimeError(f"{static} has no index.html. Fix: pip install --force-reinstall "
                           f"{FRONTEND_PACKAGE}=={FRONTEND_VERSION}.")
    return static


FIRST_TEMPLATE = "text_to_video"          # what a browser that never opened the editor here sees first
FIRST_SEEN_COOKIE = "kinema_editor_seen"


async def index(request):
    """The editor's page. A browser's first visit (no cookie yet, no query) is sent to
    /?template=text_to_video&source=kinema: the frontend's own template link (useTemplateUrlLoader) opens Kinema's
    text_to_video instead of an empty canvas, with the template browser one click away in the sidebar. Later
    visits restore what the browser kept (its open workflows live in its local storage, which the server cannot
    see: the cookie stands for "this browser has been here")."""
    if not request.query and FIRST_SEEN_COOKIE not in request.cookies and \
            (WORKFLOWS_DIR / f"{FIRST_TEMPLATE}.json").is_file():
        response = web.Response(status=302, headers={
            "Location": f"/?template={FIRST_TEMPLATE}&source={TEMPLATE_MODULE}", "Cache-Control": "no-cache"})
        response.set_cookie(FIRST_SEEN_COOKIE, "1", max_age=10 * 365 * 86400, path="/", samesite="Strict",
                            httponly=True)
        return response
    return web.FileResponse(_srv(request).static_dir / "index.html", headers={"Cache-Control": "no-cache"})


async def templates_index(request):
    # the frontend's own template index (none here: Kinema's come from /api/workflow_templates) and logo index
    return _json({} if request.match_info["name"] == "index_logo.json" else [])


# ---------------------------------------------------------------------------------------------------------------
# App factory and entry point
# ---------------------------------------------------------------------------------------------------------------
def default_user_dir() -> Path:
    env_dir = os.environ.get("KINEMA_USER_DIR")
    return Path(env_dir).expanduser().resolve() if env_dir else env.output_dir().parent / "user"


def make_app(executor: Executor | None = None, user_dir=None, max_upload_size: int = MAX_UPLOAD_SIZE,
             static_dir=None, host: str = "127.0.0.1", cache_bytes: int | None = None) -> web.Application:
    """The aiohttp app. executor: the one Executor for the server's life (default: every Kinema node); user_dir:
    where settings and userdata live (default: $KINEMA_USER_DIR or <output dir>/../user); host: the address it
    listens on (on a loopback address, requests naming another Host are refused: origin.py); cache_bytes: the
    default executor's output cache budget."""
    if executor is None:
        from .. import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
        executor = Executor(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, folders=bundled_assets(env.folders()),
                            cache_bytes=cache_bytes)
    static = Path(static_dir) if static_dir else frontend_dir()
    srv = KinemaServer(executor, Path(user_dir) if user_dir else default_user_dir(), static, max_upload_size)
    app = web.Application(client_max_size=MAX_JSON_BODY,
                          middlewares=[origin_guard(loopback_only=is_loopback_bind(host)), _refusals])
    app[SERVER] = srv
    app.on_startup.append(srv.start)
    app.on_shutdown.append(srv.stop)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/", index)
    for method, path, handler in _ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_get("/templates/{name:index(_logo|\\.[a-z-]+)?\\.json}", templates_index)
    app.router.add_static("/", static, follow_symlinks=False)
    return app


def bundled_assets(folders: env.Folders) -> env.Folders:
    """The folders, also searching the bundled workflows' example inputs (workflows/assets) after the input folder."""
    return folders.searching(WORKFLOWS_DIR / "assets") if (WORKFLOWS_DIR / "assets").is_dir() else folders


def serve(host: str = "127.0.0.1", port: int = 8188, user_dir=None, cache_mb: int | None = None) -> int:
    """Run the editor's server until Ctrl-C; returns the exit code. cache_mb: the output cache's RAM budget
    (default: cache.default_budget())."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        app = make_app(user_dir=user_dir, host=host, cache_bytes=None if cache_mb is None else cache_mb << 20)
    except (RuntimeError, ValueError) as exc:
        print(f"kinema serve: {exc}", file=sys.stderr)
        return 1
    if not is_loopback_bind(host):
        print(f"kinema serve: listening on {host}: anyone who can reach this address can run graphs, read "
              f"outputs and upload files. Use --host 127.0.0.1 to keep it local.", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"Kinema: the ComfyUI editor {FRONTEND_VERSION} at http://{shown}:{port}/  (outputs in "
          f"{env.output_dir()}, models in {env.models_dir()}; Ctrl-C stops)", file=sys.stderr)
    try:
        web.run_app(app, host=host, port=port, print=None, access_log=None)
    except OSError as exc:
        print(f"kinema serve: cannot listen on {host}:{port}: {exc}. Fix: pick another --port.", file=sys.stderr)
        return 1
    return 0
