"""A small HTTP front between the gateway and moto's KMS server, for revocations.

moto 5 serves `Decrypt` and `GenerateDataKey` on a disabled key and on one pending
deletion, so what a customer does to take a key away cannot be made to happen in
moto. The front forwards every call to moto unchanged unless told to refuse it, and
then answers as AWS KMS does when access is gone: HTTP 400 with a JSON body whose
`__type` is `DisabledException`, `KMSInvalidStateException`, `AccessDeniedException`
or `NotFoundException` (the messages name ARNs, as AWS's do). Stopping the front
makes KMS unreachable; starting it again brings it back on the same port.

It also keeps a journal of the calls it saw (operation, KeyId, encryption context,
whether it refused), which is how a test tells which key a gateway asked for.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson

#: what AWS answers for each refusal (message templates; {key} is the key's ARN)
MESSAGES = {
    "DisabledException": "{key} is disabled.",
    "KMSInvalidStateException": "{key} is pending deletion.",
    "AccessDeniedException": "User: arn:aws:iam::123456789012:user/recovea is not authorized"
    " to perform: kms:Decrypt on resource: {key} because no resource-based policy allows"
    " the kms:Decrypt action",
    "NotFoundException": "Key '{key}' does not exist",
}


@dataclass(frozen=True)
class Call:
    """One KMS call the front saw."""

    operation: str
    key_id: str | None
    context: dict[str, str]
    refused: str | None


@dataclass(frozen=True)
class Refusal:
    """Refuse `operation` (any when None) on the key `key_id` (its id; also matched
    inside an ARN) with `error`; `when_context` narrows it to calls whose encryption
    context holds those pairs."""

    key_id: str
    error: str
    operation: str | None = None
    when_context: tuple[tuple[str, str], ...] = ()

    def applies(self, operation: str, key_id: str | None, context: dict[str, str]) -> bool:
        if self.operation is not None and operation != self.operation:
            return False
        if key_id is None or not (key_id == self.key_id or key_id.endswith("/" + self.key_id)):
            return False
        return all(context.get(name) == value for name, value in self.when_context)


class KmsFront:
    """The front on 127.0.0.1:`port`, forwarding to moto at `upstream`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.refusals: list[Refusal] = []
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen (again, on the same port once it has one)."""
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status, headers, answer = front.answer(dict(self.headers.items()), body)
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        """Stop listening: KMS is unreachable (connections are refused)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def refuse(self, refusal: Refusal) -> None:
        with self._lock:
            self.refusals.append(refusal)

    def allow_all(self) -> None:
        with self._lock:
            self.refusals.clear()

    def calls_since(self, mark: int) -> list[Call]:
        with self._lock:
            return self.calls[mark:]

    def mark(self) -> int:
        with self._lock:
            return len(self.calls)

    def answer(
        self, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        operation = headers.get("X-Amz-Target", headers.get("x-amz-target", "")).split(".")[-1]
        request = orjson.loads(body) if body else {}
        key_id = request.get("KeyId")
        context = dict(request.get("EncryptionContext") or {})
        with self._lock:
            refusal = next(
                (r for r in self.refusals if r.applies(operation, key_id, context)), None
            )
            self.calls.append(
                Call(operation, key_id, context, refusal.error if refusal is not None else None)
            )
        if refusal is not None:
            message = MESSAGES[refusal.error].format(key=key_id)
            error = orjson.dumps({"__type": refusal.error, "message": message})
            return 400, [("content-type", "application/x-amz-json-1.1")], error
        forwarded = {
            k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")
        }
        response = httpx.post(self.upstream + "/", content=body, headers=forwarded, timeout=30)
        kept = [(k, v) for k, v in response.headers.items() if k.lower() == "content-type"]
        return response.status_code, kept, response.content
