"""The files `kinema serve` reads and writes for its clients: /view, uploads, settings and userdata.

Every path a client names is confined to its folder (no `..`, absolute paths, encoded separators, or symlinks
leading outside); uploads are type-checked by extension and magic bytes and given a safe name; every file the server
writes goes to a temp file beside it first and is renamed into place, so readers never see half a file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import re
import tempfile
import unicodedata
from contextlib import contextmanager
from pathlib import Path

from ..nodes import env

log = logging.getLogger("kinema.server")

MAX_UPLOAD_SIZE = 100 * 1024 * 1024          # bytes, as ComfyUI's default --max-upload-size 100 (MB)
FOLDER_TYPES = ("output", "input", "temp")
MAX_NAME_BYTES = 255                         # one path component, in UTF-8 (ext4, xfs, btrfs, APFS allow no more)
UPLOAD_NAME_BYTES = 200                      # an upload's name is cut to this, leaving room for " (12).png"
STALE_AFTER = 3600                           # s: a hidden temp file untouched this long is a killed run's leftover


def _riff(kind: bytes):
    return lambda head: head[:4] == b"RIFF" and head[8:12] == kind


def _mp3(head: bytes) -> bool:
    return head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)


_ISO_BMFF = lambda head: head[4:8] == b"ftyp"          # noqa: E731  (mp4, mov, m4a)
_EBML = lambda head: head[:4] == b"\x1a\x45\xdf\xa3"   # noqa: E731  (webm, mkv)
# extension -> magic-bytes check of the first 16 bytes
UPLOAD_TYPES = {
    ".png": lambda h: h[:8] == b"\x89PNG\r\n\x1a\n",
    ".jpg": lambda h: h[:3] == b"\xff\xd8\xff", ".jpeg": lambda h: h[:3] == b"\xff\xd8\xff",
    ".webp": _riff(b"WEBP"), ".gif": lambda h: h[:6] in (b"GIF87a", b"GIF89a"),
    ".wav": _riff(b"WAVE"), ".flac": lambda h: h[:4] == b"fLaC", ".ogg": lambda h: h[:4] == b"OggS",
    ".mp3": _mp3, ".mp4": _ISO_BMFF, ".mov": _ISO_BMFF, ".m4a": _ISO_BMFF, ".webm": _EBML,
}
# served inline by /view; anything else is sent as an attachment (no HTML/SVG/JS executing on our origin)
INLINE_TYPES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".wav", ".flac", ".ogg", ".mp3", ".mp4", ".mov",
                ".m4a", ".webm", ".json", ".txt"}
for _ext, _mime in ((".webp", "image/webp"), (".webm", "video/webm"), (".flac", "audio/flac"),
                    (".m4a", "audio/mp4"), (".mp3", "audio/mpeg"), (".ogg", "audio/ogg")):
    mimetypes.add_type(_mime, _ext)


# ---------------------------------------------------------------------------------------------------------------
# Confinement
# ---------------------------------------------------------------------------------------------------------------
class Refused(Exception):
    """A request that names a path outside its folder, a bad name, or a bad upload; carries the HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|2e|25|00)", re.IGNORECASE)


def check_name(name: str, what: str = "filename", max_bytes: int | None = MAX_NAME_BYTES) -> str:
    """One path component: refuses empty names, '.', '..', separators (plain or percent-encoded), drive letters,
    control characters and (with max_bytes) names longer than that in UTF-8, with Refused(400)."""
    if not isinstance(name, str) or not name:
        raise Refused(400, f"{what} is empty")
    if name in (".", "..") or "/" in name or "\\" in name or _ENCODED_SEPARATOR.search(name) or \
            re.match(r"^[A-Za-z]:", name) or any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise Refused(400, f"{what} {name[:100]!r} is not a plain file name (no '..', separators, control "
                           f"characters or absolute paths)")
    if max_bytes is not None and len(name.encode("utf-8")) > max_bytes:
        raise Refused(400, f"{what} {name[:40]!r}... is {len(name.encode('utf-8'))} bytes long; names may have at "
                           f"most {max_bytes} bytes (UTF-8)")
    return name


def check_subfolder(subfolder: str, what: str = "subfolder") -> list[str]:
    """A relative folder path ('', 'a', 'a/b'): every component must pass check_name; absolute paths are refused."""
    if not subfolder:
        return []
    if subfolder.startswith(("/", "\\")):
        raise Refused(400, f"{what} {subfolder[:100]!r} is absolute; give a path relative to its folder")
    return [check_name(part, what) for part in subfolder.strip("/").split("/")]


def confined(base: Path, parts: list[str]) -> Path:
    """base/parts, resolved (symlinks followed); Refused(403) when the result leaves base."""
    root = base.resolve()
    if sum(len(p.encode("utf-8")) + 1 for p in parts) + len(str(root)) > 4000:     # PATH_MAX is 4096
        raise Refused(400, "the path is too long; use shorter folder and file names")
    target = root.joinpath(*parts).resolve()
    if target != root and not target.is_relative_to(root):
        raise Refused(403, "path leads outside its folder")
    return target


def inside(path: Path, base: Path) -> bool:
    """True when path, with symlinks followed, stays inside base."""
    try:
        confined(base, list(path.relative_to(base).parts))
        return True
    except Refused:
        return False


def folder_for(kind: str | None) -> Path:
    """The output, input or temp folder by its ComfyUI `type` name (default output); Refused(400) for others."""
    kind = kind or "output"
    if kind not in FOLDER_TYPES:
        raise Refused(400, f"type must be one of {', '.join(FOLDER_TYPES)}, got {kind!r}")
    return {"output": env.output_dir, "input": env.input_dir, "temp": env.temp_dir}[kind]()


def userdata_path(user_root: Path, rel: str, must_exist: bool = False) -> Path:
    """A file under the user's folder named by a relative path; Refused(404) when must_exist and it is missing."""
    parts = check_subfolder(rel, "userdata path")
    if not parts:
        raise Refused(400, "userdata path is empty")
    path = confined(user_root, parts)
    if must_exist and not path.is_file():
        raise Refused(404, f"userdata file {rel!r} not found")
    return path


def file_info(path: Path, root: Path) -> dict:
    """The userdata listing's full_info entry: path relative to root, size in bytes, times in seconds."""
    st = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": st.st_size, "modified": st.st_mtime,
            "created": st.st_ctime}


def view_headers(path: Path, name: str) -> dict:
    """Headers for /view: media inline with its type, anything else as an attachment; never content-sniffed."""
    headers = {"X-Content-Type-Options": "nosniff"}
    quoted = name.replace('"', "")
    if path.suffix.lower() in INLINE_TYPES:
        headers["Content-Disposition"] = f'filename="{quoted}"'
        headers["Content-Type"] = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    else:
        headers.update({"Content-Disposition": f'attachment; filename="{quoted}"',
                        "Content-Type": "application/octet-stream"})
    return headers


# ---------------------------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------------------------
def _chunks(f, size: int = 1 << 20):
    """The contents of an open binary file, `size` bytes at a time."""
    return iter(lambda: f.read(size), b"")


@contextmanager
def _temp_file(directory: Path, prefix: str, chunks):
    """Write chunks to a new temp file in directory, flushed to disk, and yield its path; the temp file is removed
    afterwards unless it was renamed away."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def replace_into(source: Path, dest: Path) -> None:
    """Move source onto dest (os.replace); Refused(409) when dest is a folder or another non-regular file."""
    if dest.is_dir() or (dest.exists() and not dest.is_file()):
        raise Refused(409, f"{dest.name!r} exists and is a folder (or not a regular file); pick another name")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, dest)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file beside `path` and rename it into place: readers never see a half-written file."""
    short = path.name.encode("utf-8")[:200].decode("utf-8", "ignore")     # the temp name stays under 255 bytes
    with _temp_file(path.parent, f".{short}.", [data]) as tmp:
        os.replace(tmp, path)


# Hidden temp files of atomic writes: `.name.<8 hex>.part.ext` (models/media.atomic_write), `.upload.<random>.tmp`
# (uploads) and `.name.<random>.tmp` (settings and userdata). A process killed mid-write leaves them behind.
_TEMP_FILE = re.compile(r"^\.(?:.+\.[0-9a-f]{8}\.part(?:\.[A-Za-z0-9]{1,8})?|upload\..+\.tmp|.+\.[a-z0-9_]{8}\.tmp)$")


def remove_stale_temp_files(folders, older_than: float = STALE_AFTER) -> list[Path]:
    """Delete the hidden temp files (see _TEMP_FILE) under `folders` untouched for `older_than` seconds: what a
    killed run or server left. Files in flight are newer (a writer touches its file as it writes). Returns them."""
    import time
    removed, cutoff = [], time.time() - older_than
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if d != ".partial"]        # kinema batch cleans its own
            for name in files:
                path = Path(root) / name
                try:
                    if _TEMP_FILE.match(name) and path.is_file() and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed.append(path)
                except OSError as exc:                              # read-only, vanished: not ours to insist
                    log.debug("could not remove %s: %s", path, exc)
    if removed:
        log.info("removed %d temp file(s) left by killed runs: %s", len(removed),
                 ", ".join(str(p) for p in removed[:5]) + (" ..." if len(removed) > 5 else ""))
    return removed


# Not stored: with it set, a browser with no open workflow starts on ComfyUI's default graph of core nodes, which
# Kinema does not have (a "missing nodes" error); without it, on Kinema's templates (workflows/).
UNSTORED_SETTINGS = frozenset({"Comfy.TutorialCompleted"})


class Settings:
    """The editor's settings (comfy.settings.json), read once and written atomically on every change."""

    def __init__(self, path: Path):
        self.path = path
        self._values: dict | None = None

    def get(self) -> dict:
        if self._values is None:
            try:
                loaded = json.loads(self.path.read_text())
                self._values = {k: v for k, v in loaded.items() if k not in UNSTORED_SETTINGS}
            except FileNotFoundError:
                self._values = {}
            except (OSError, ValueError, AttributeError) as exc:
                log.warning("%s is unreadable (%s); starting from defaults", self.path, exc)
                self._values = {}
        return self._values

    def save(self, values: dict) -> None:
        merged = {**self.get(), **{k: v for k, v in values.items() if k not in UNSTORED_SETTINGS}}
        write_bytes_atomic(self.path, json.dumps(merged, indent=2).encode())
        self._values = merged


# ---------------------------------------------------------------------------------------------------------------
# Uploads
# ---------------------------------------------------------------------------------------------------------------
def sanitize_upload_name(name: str) -> str:
    """A safe file name from a client's: refuses paths, keeps letters, digits and ` ._-()[]+,@=`, replaces the rest
    with '_', drops leading dots (no hidden files) and cuts the stem so the name has at most UPLOAD_NAME_BYTES bytes
    in UTF-8 (a long name is shortened, not refused)."""
    check_name(name, max_bytes=None)
    name = unicodedata.normalize("NFC", name)
    name = "".join(c if (c.isalnum() or c in " ._-()[]+,@=") else "_" for c in name).strip(" .")
    stem, ext = os.path.splitext(name)
    if len(ext.encode("utf-8")) > 16:                       # not an extension: part of the name
        stem, ext = name, ""
    budget = UPLOAD_NAME_BYTES - len(ext.encode("utf-8"))
    stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(" .")
    if not stem:
        raise Refused(400, "filename has no usable characters")
    return stem + ext


def check_upload_type(name: str, head: bytes) -> None:
    """Refused(415) unless the name's extension is an accepted type and the first 16 bytes match it."""
    ext = os.path.splitext(name)[1].lower()
    if ext not in UPLOAD_TYPES:
        raise Refused(415, f"{ext or 'no extension'} is not an accepted type; upload one of "
                           f"{', '.join(sorted(UPLOAD_TYPES))}")
    if not UPLOAD_TYPES[ext](head):
        raise Refused(415, f"the file's content is not {ext[1:].upper()} (its first bytes do not match)")


async def receive_upload(part, limit: int):
    """Stream one multipart file part into a spooled temp file; Refused(413) past the limit."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    size = 0
    while chunk := await part.read_chunk(1 << 16):
        size += len(chunk)
        if size > limit:
            spool.close()
            raise Refused(413, f"upload is larger than the limit of {limit} bytes")
        spool.write(chunk)
    spool.seek(0)
    return spool, size


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in _chunks(f):
            h.update(chunk)
    return h.hexdigest()


def store_upload(spool, name: str, directory: Path, overwrite: bool) -> str:
    """Write the upload into directory atomically; without overwrite pick 'name (1).ext' (or reuse an identical
    file of the same name, as ComfyUI does). Returns the final name."""
    digest = hashlib.sha256()

    def hashed():
        for chunk in _chunks(spool):
            digest.update(chunk)
            yield chunk

    with _temp_file(directory, ".upload.", hashed()) as tmp:
        if overwrite:
            replace_into(Path(tmp), directory / name)
            return name
        stem, ext = os.path.splitext(name)
        for i in range(10000):
            candidate = name if i == 0 else f"{stem} ({i}){ext}"
            target = directory / candidate
            if target.exists():
                if target.is_file() and _file_sha256(target) == digest.hexdigest():
                    return candidate            # the same file is already there
                continue
            try:
                os.link(tmp, target)            # fails if the name was taken meanwhile: never overwrites
            except FileExistsError:
                continue
            except OSError:                     # a filesystem without hard links
                if target.exists():
                    continue
                os.replace(tmp, target)
            return candidate
        raise Refused(409, f"too many files named like {name!r}")
