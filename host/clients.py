"""The editor's WebSocket clients of `kinema serve`: one bounded queue and one sender per client.

Events come from any thread (the job worker, request handlers) through `Clients.post` / `post_preview`, which hand
them to the event loop; there `_deliver` puts each on the queue of every client it is for, without waiting for
any socket. Each client's own sender task writes its queue to its socket. A client that falls behind (more than
COALESCE_AFTER bytes waiting) gets progress coalesced: a new `progress_state` of a job (or `progress` of a node)
replaces one still waiting in its queue, so it gets the latest state, not every state (a 3000-node graph's state
map is ~0.6 MB); a client that keeps up gets every message. A client that stops reading only
fills its own queue: past MAX_QUEUED messages or MAX_QUEUED_BYTES it is dropped (its connection aborted, logged),
and the server and every other client go on. A message that cannot be delivered (a bad client id, a payload that does
not encode) is logged and skipped; nothing ends the delivery of the next one.
"""
from __future__ import annotations

import asyncio
import json
import logging
import struct
from dataclasses import dataclass, field

from aiohttp import web

from .wire import dumps

__all__ = ["Clients", "Client", "MAX_QUEUED", "MAX_QUEUED_BYTES"]

log = logging.getLogger("kinema.server")

MAX_QUEUED = 4096                 # messages waiting for one client before it is dropped
MAX_QUEUED_BYTES = 16 << 20       # bytes waiting for one client before it is dropped
COALESCE_AFTER = 1 << 20          # bytes waiting: from here on a newer progress message replaces a waiting one
BIN_PREVIEW, BIN_PREVIEW_WITH_METADATA = 1, 4   # binary WebSocket event types


@dataclass(eq=False)
class _Slot:
    """A queued message; a coalescing key lets a newer message of the same key take its place while it waits."""
    message: str | bytes
    key: tuple | None = None


def _coalescing_key(kind: str, payload) -> tuple | None:
    data = payload.get("data") if kind == "json" and isinstance(payload, dict) else None
    if not isinstance(data, dict):
        return None
    if payload.get("type") == "progress_state":
        return ("progress_state", str(data.get("prompt_id")))
    if payload.get("type") == "progress":
        return ("progress", str(data.get("prompt_id")), str(data.get("node")))
    return None


@dataclass(eq=False)
class Client:
    """One connected editor tab: its socket, the feature flags it sent, its queue and the task that sends it."""
    sid: str
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None = None
    flags: dict = field(default_factory=dict)
    got_flags: bool = False
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)     # _Slot messages, in order
    waiting: dict = field(default_factory=dict)                     # coalescing key -> its _Slot still queued
    queued_bytes: int = 0
    sender: asyncio.Task | None = None
    dropped: bool = False

    def preview_frame(self, image: bytes, metadata: dict) -> bytes:
        if self.flags.get("supports_preview_metadata"):
            meta = json.dumps(metadata).encode()
            return struct.pack(">II", BIN_PREVIEW_WITH_METADATA, len(meta)) + meta + image
        return struct.pack(">II", BIN_PREVIEW, 1) + image        # 1 = JPEG


class Clients:
    """{client id: Client}, with thread-safe posting and per-client senders."""

    def __init__(self):
        self.clients: dict[str, Client] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()

    async def close_all(self) -> None:
        for client in list(self.clients.values()):
            self._forget(client)
            await client.ws.close()

    # ---- posting (any thread) ------------------------------------------------------------------------------
    def post(self, kind: str, data, sid=None) -> None:
        """Queue a JSON message for one client (sid) or everyone (None); callable from any thread."""
        self._handoff(("json", {"type": kind, "data": data}, sid))

    def post_preview(self, image: bytes, metadata: dict, sid=None) -> None:
        """Queue a JPEG preview frame for one client (sid) or everyone (None); callable from any thread."""
        self._handoff(("preview", (image, metadata), sid))

    def _handoff(self, item) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._deliver, item)
        except RuntimeError:        # the loop shut down meanwhile
            pass

    # ---- delivery (the event loop) -------------------------------------------------------------------------
    def _deliver(self, item) -> None:
        kind, payload, sid = item
        try:
            if sid is None:
                targets = list(self.clients.values())
            else:
                target = self.clients.get(sid) if isinstance(sid, str) else None
                targets = [target] if target is not None else []
            text = dumps(payload) if kind == "json" else None
            key = _coalescing_key(kind, payload)
            for client in targets:
                self._enqueue(client, text if kind == "json" else client.preview_frame(*payload), key)
        except Exception:           # one bad message must never stop the next ones
            log.exception("a %s message for client %r could not be delivered", kind, sid)

    def _enqueue(self, client: Client, message: str | bytes, key: tuple | None = None) -> None:
        if client.dropped:
            return
        size = len(message)
        waiting = client.waiting.get(key) if key is not None else None
        if waiting is not None and client.queued_bytes > COALESCE_AFTER:     # behind: the newer state replaces it
            client.queued_bytes += size - len(waiting.message)
            waiting.message = message
            return
        if client.queue.qsize() >= MAX_QUEUED or client.queued_bytes + size > MAX_QUEUED_BYTES:
            log.warning("WebSocket client %s stopped reading (%d messages, %d bytes waiting): dropped",
                        client.sid[:64], client.queue.qsize(), client.queued_bytes)
            self.drop(client)
            return
        client.queued_bytes += size
        slot = _Slot(message, key)
        if key is not None:
            client.waiting[key] = slot
        client.queue.put_nowait(slot)

    async def _send(self, client: Client) -> None:
        """The client's sender: its queue to its socket, one message at a time, until it closes."""
        try:
            while True:
                slot = await client.queue.get()
                if slot.key is not None and client.waiting.get(slot.key) is slot:
                    del client.waiting[slot.key]
                message = slot.message
                client.queued_bytes -= len(message)
                if isinstance(message, str):
                    await client.ws.send_str(message)
                else:
                    await client.ws.send_bytes(message)
        except (ConnectionError, RuntimeError) as exc:      # closed meanwhile
            log.debug("client %s: %s", client.sid[:64], exc)
        finally:
            if not client.dropped and self.clients.get(client.sid) is client:
                self._forget(client)

    # ---- connecting, dropping ------------------------------------------------------------------------------
    def connect(self, sid: str, ws: web.WebSocketResponse, transport) -> tuple[Client, Client | None]:
        """Register a connection (a reconnecting tab keeps its id and replaces its old socket): (new, old)."""
        client = Client(sid, ws, transport)
        old = self.clients.get(sid)
        if old is not None:
            self._forget(old)
        self.clients[sid] = client
        client.sender = asyncio.get_running_loop().create_task(self._send(client))
        return client, old

    def disconnect(self, client: Client) -> None:
        if self.clients.get(client.sid) is client:
            self._forget(client)

    def drop(self, client: Client) -> None:
        """A client that fell behind: forget it and abort its connection (the socket's buffers are full: a close
        frame could not be sent)."""
        self._forget(client)
        if client.transport is not None:
            client.transport.abort()

    def _forget(self, client: Client) -> None:
        client.dropped = True
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]
        if client.sender is not None and client.sender is not asyncio.current_task():
            client.sender.cancel()
        while not client.queue.empty():
            client.queue.get_nowait()
        client.waiting.clear()
        client.queued_bytes = 0
