"""The mock's Files and Message Batches: OpenAI's and Anthropic's Files share their
paths and are told apart as the real SDKs make them (`anthropic-version`); uploads
are read as a stream, never whole, however large.

    POST   /v1/files                 upload (multipart/form-data, or a raw body)
    GET    /v1/files                 list
    GET    /v1/files/{id}            one file's metadata
    GET    /v1/files/{id}/content    its bytes (kept for files up to 1 MiB)
    DELETE /v1/files/{id}
    POST   /v1/messages/batches      create (Anthropic)
    GET    /v1/messages/batches[/{id}]

An upload's journal entry gets `upload`: the bytes and SHA-256 of the file part (of
the whole body when it is not multipart), its filename and the form's other fields,
so a test can tell that every byte arrived unchanged without the mock keeping them.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from typing import Any

import orjson
from aiohttp import BodyPartReader, StreamReader, web

from recovea_proxy.mock_provider import journal
from recovea_proxy.mock_provider.errors import Failure, Surface, error_body, has_key

FILES_KEY: web.AppKey[dict[str, dict[str, Any]]] = web.AppKey("mock_files", dict)
_KEEP_CONTENT = 1024 * 1024
_CHUNK = 64 * 1024
_FIELD_MAX = 1024
_COUNTER = itertools.count(1)
_ISO_EPOCH = "2026-01-01T00:00:00Z"


def add_routes(app: web.Application) -> None:
    """Register the Files and Message Batches routes (before any catch-all)."""
    app[FILES_KEY] = {}
    routes = app.router
    routes.add_post("/v1/files", _upload)
    routes.add_get("/v1/files", _list)
    routes.add_get("/v1/files/{file_id}", _one)
    routes.add_get("/v1/files/{file_id}/content", _content)
    routes.add_delete("/v1/files/{file_id}", _delete)
    routes.add_post("/v1/messages/batches", _create_batch)
    routes.add_get("/v1/messages/batches", _list_batches)
    routes.add_get("/v1/messages/batches/{batch_id}", _one_batch)


def _surface(request: web.Request) -> Surface:
    return "anthropic" if "anthropic-version" in request.headers else "openai"


def _json(request: web.Request, doc: Any, status: int = 200) -> web.Response:
    id_header = "request-id" if _surface(request) == "anthropic" else "x-request-id"
    return web.Response(
        body=orjson.dumps(doc),
        status=status,
        content_type="application/json",
        headers={id_header: f"req_mock_files_{next(_COUNTER)}"},
    )


def _refused(request: web.Request, failure: Failure, detail: str = "") -> web.Response:
    body = error_body(_surface(request), failure, "req_mock_files", detail)
    return web.Response(body=body, status=failure.status, content_type="application/json")


async def _upload(request: web.Request) -> web.StreamResponse:
    journal.record(request, b"", None)
    if not has_key(request):
        return _refused(request, Failure.AUTH)
    if request.content_type.startswith("multipart/"):
        upload = await _read_multipart(request)
    else:
        upload = await _read_raw(request.content)
    journal.entry_of(request)["upload"] = {k: v for k, v in upload.items() if k != "content"}
    surface = _surface(request)
    file_id = ("file_" if surface == "anthropic" else "file-") + upload["sha256"][:24]
    request.app[FILES_KEY][file_id] = {**upload, "id": file_id, "surface": surface}
    return _json(request, _file_doc(request.app[FILES_KEY][file_id]))


async def _read_multipart(request: web.Request) -> dict[str, Any]:
    reader = await request.multipart()
    upload: dict[str, Any] = {"fields": {}, "filename": None, "bytes": 0, "sha256": ""}
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.filename is None:
            upload["fields"][part.name] = (await part.text())[:_FIELD_MAX]
            continue
        upload.update(await _read_raw(part))
        upload["filename"] = part.filename
    return upload


async def _read_raw(stream: BodyPartReader | StreamReader) -> dict[str, Any]:
    """Hash and count a body (or a body part) chunk by chunk; keep it only when small."""
    read = stream.read_chunk if isinstance(stream, BodyPartReader) else stream.read
    digest = hashlib.sha256()
    size = 0
    kept = bytearray()
    while chunk := await read(_CHUNK):
        size += len(chunk)
        digest.update(chunk)
        if size <= _KEEP_CONTENT:
            kept += chunk
    return {
        "bytes": size,
        "sha256": digest.hexdigest(),
        "content": bytes(kept) if size <= _KEEP_CONTENT else None,
    }


def _file_doc(stored: dict[str, Any]) -> dict[str, Any]:
    filename = stored.get("filename") or "upload"
    if stored["surface"] == "anthropic":
        return {
            "id": stored["id"],
            "type": "file",
            "filename": filename,
            "mime_type": "application/octet-stream",
            "size_bytes": stored["bytes"],
            "created_at": _ISO_EPOCH,
            "downloadable": stored["content"] is not None,
        }
    return {
        "id": stored["id"],
        "object": "file",
        "bytes": stored["bytes"],
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": stored.get("fields", {}).get("purpose", "user_data"),
        "status": "processed",
    }


def _page(request: web.Request, items: list[dict[str, Any]]) -> dict[str, Any]:
    page: dict[str, Any] = {
        "data": items,
        "has_more": False,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
    }
    if _surface(request) == "openai":
        page["object"] = "list"
    return page


def _known(request: web.Request) -> dict[str, Any] | None:
    stored = request.app[FILES_KEY].get(request.match_info["file_id"])
    return stored if stored is not None and stored["surface"] == _surface(request) else None


async def _list(request: web.Request) -> web.StreamResponse:
    journal.record(request, b"", None)
    if not has_key(request):
        return _refused(request, Failure.AUTH)
    surface = _surface(request)
    files = [_file_doc(f) for f in request.app[FILES_KEY].values() if f["surface"] == surface]
    return _json(request, _page(request, files))


async def _one(request: web.Request) -> web.StreamResponse:
    journal.record(request, b"", None)
    stored = _known(request)
    if stored is None:
        return _refused(request, Failure.NOT_FOUND, f" ({request.path})")
    return _json(request, _file_doc(stored))


async def _content(request: web.Request) -> web.StreamResponse:
    journal.record(request, b"", None)
    stored = _known(request)
    if stored is None or stored["content"] is None:
        return _refused(request, Failure.NOT_FOUND, f" ({request.path})")
    return web.Response(body=stored["content"], content_type="application/octet-stream")


async def _delete(request: web.Request) -> web.StreamResponse:
    journal.record(request, b"", None)
    stored = _known(request)
    if stored is None:
        return _refused(request, Failure.NOT_FOUND, f" ({request.path})")
    del request.app[FILES_KEY][stored["id"]]
    if stored["surface"] == "anthropic":
        return _json(request, {"id": stored["id"], "type": "file_deleted"})
    return _json(request, {"id": stored["id"], "object": "file", "deleted": True})


def _batch(batch_id: str, count: int) -> dict[str, Any]:
    return {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": "in_progress",
        "request_counts": {
            "processing": count,
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        },
        "ended_at": None,
        "created_at": _ISO_EPOCH,
        "expires_at": "2026-01-02T00:00:00Z",
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": None,
    }


async def _create_batch(request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    body = journal.parse_json(raw)
    journal.record(request, raw, body)
    if not has_key(request):
        return _refused(request, Failure.AUTH)
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        return _refused(request, Failure.BAD_JSON)
    batch_id = "msgbatch_" + hashlib.sha256(raw).hexdigest()[:24]
    return _json(request, _batch(batch_id, len(requests)))


async def _list_batches(request: web.Request) -> web.StreamResponse:
    journal.record(request, b"", None)
    if not has_key(request):
        return _refused(request, Failure.AUTH)
    return _json(request, _page(request, [_batch("msgbatch_mock_1", 1)]))


async def _one_batch(request: web.Request) -> web.StreamResponse:
    journal.record(request, b"", None)
    return _json(request, _batch(request.match_info["batch_id"], 1))
