"""Request bodies that are streamed to the provider as they arrive: file uploads,
audio, anything that is not JSON.

Only a JSON body is ever parsed (`request_body`); reading an upload whole would hold
it in memory (a batch file may be 512 MB) and make the provider wait for its last
byte before it sees the first. An upload is instead handed to the upstream client
as an async iterator of the chunks the server receives: each chunk is hashed and
counted on its way (the receipt's `request_sha256` is the digest of every byte the
provider was sent) and dropped once written, so the gateway holds at most the
server's read buffer and the upstream socket's write buffer, however large the body.

Its bound is `RECOVEA_MAX_UPLOAD_MB`: a declared `Content-Length` above it gets 413
before anything goes upstream; a body that grows past it while streaming (chunked,
or longer than declared) stops the upload (the provider sees a cut request) and the
client gets the same 413. A client that leaves mid-upload ends the request as a
client gone. A body that stalls is cut off by the HTTP protocol
(`http_protocol`: 408, then `http.disconnect` here).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator

from recovea_proxy.asgi import Receive
from recovea_proxy.clean import clean_model
from recovea_proxy.record import RequestRecord
from recovea_proxy.request_body import ClientGone, too_large

# A multipart form's `model` and `stream` fields (audio transcriptions, image edits
# name their model there): looked for in the form's first bytes only, before its first
# file part, where SDKs put their fields.
_FORM_FIELD = re.compile(
    rb'name="(model|stream)"\r\n(?:[^\r\n]*\r\n)*?\r\n([^\r\n]{1,256})\r\n'
)
_SNIFF_MAX = 64 * 1024
# Media types read whole and parsed (or forwarded whole) rather than streamed: JSON,
# and the two types clients send JSON under by default (curl -d, fetch of a string).
_READ_WHOLE = frozenset({b"application/json", b"application/x-www-form-urlencoded", b"text/plain"})


def is_multipart(content_type: bytes | None) -> bool:
    """Whether an upload is a multipart form (whose fields are worth reading)."""
    return content_type is not None and content_type[:10].lower() == b"multipart/"


def is_upload(content_type: bytes | None) -> bool:
    """Whether a body of this `Content-Type` is streamed (anything that declares a
    type other than JSON: multipart, binary, audio, ...). A body without a type is
    read whole, as before: SDKs always declare one for files."""
    if content_type is None or content_type == b"application/json":
        return False
    media = content_type.partition(b";")[0].strip().lower()
    return media not in _READ_WHOLE and not media.endswith(b"+json")


class UploadTooLarge(Exception):
    """The body grew past the upload bound while streaming."""


class StreamedBody:
    """One request body on its way upstream, chunk by chunk (see the module
    docstring). `failure` is set when the body stopped for a reason of its own (the
    client left, the bound was passed): the upstream client then reports only a
    broken connection, and the pipeline answers for this cause instead."""

    __slots__ = (
        "_hash",
        "_head",
        "_limit",
        "_receive",
        "_record",
        "_settled",
        "failure",
        "size",
    )

    def __init__(
        self, receive: Receive, record: RequestRecord, limit: int, *, multipart: bool
    ) -> None:
        self._receive = receive
        #: the form's first bytes, kept until its fields are read (multipart only)
        self._head: bytearray | None = bytearray() if multipart else None
        self._record = record
        self._limit = limit
        self._hash = hashlib.sha256()
        self.size = 0
        self._settled = False
        self.failure: Exception | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks as the server receives them (for the upstream client)."""
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk: bytes = message.get("body", b"")
                more = message.get("more_body", False)
                if chunk:
                    self.size += len(chunk)
                    if self.size > self._limit:
                        raise UploadTooLarge
                    self._hash.update(chunk)
                if self._head is not None:
                    self._read_form_fields(chunk, ended=not more)
                if not more:
                    self.settle()
                if chunk:
                    yield chunk
                if not more:
                    return
        except (ClientGone, UploadTooLarge) as exc:
            self.failure = exc
            raise

    def _read_form_fields(self, chunk: bytes, *, ended: bool) -> None:
        """Read the form's `model` and `stream` fields into the record, from the fields
        before its first file part (a file's bytes are not the form's) in its first
        `_SNIFF_MAX` bytes."""
        head = self._head
        assert head is not None
        head += chunk[: _SNIFF_MAX - len(head)]
        file_at = head.find(b'filename="')
        if file_at < 0 and len(head) < _SNIFF_MAX and not ended:
            return  # the fields may not all be here yet
        record = self._record
        for found in _FORM_FIELD.finditer(head, 0, len(head) if file_at < 0 else file_at):
            value = found.group(2).decode("utf-8", "replace")
            if found.group(1) == b"model":
                record.model = clean_model(value)
            else:
                record.stream = value.strip().lower() == "true"
        self._head = None

    def settle(self) -> None:
        """Put what was forwarded so far in the record (the whole body once it has
        ended; the bytes sent until the provider answered if it answered early). The
        first call wins: the receipt is signed over what it put there."""
        if self._settled:
            return
        self._settled = True
        self._record.request_bytes = self.size
        self._record.request_sha256 = self._hash.hexdigest()

    def cause(self) -> Exception | None:
        """What the pipeline should raise for a failed upload: `ClientGone`, a 413,
        or None when the body was not the cause."""
        if isinstance(self.failure, UploadTooLarge):
            return too_large(self._limit, "upload")
        return self.failure


def refuse_declared(content_length: int | None, limit: int) -> None:
    """413 before anything goes upstream when the declared length is over the bound."""
    if content_length is not None and content_length > limit:
        raise too_large(limit, "upload")
