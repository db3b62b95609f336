"""Local receivers for notices: an SMTP server and a webhook endpoint, each on a free loopback port.

The webhook endpoint answers from a script (a status, a status with headers, or a
connection reset) and then 200, and can be stopped and started again on the same
port to play a CRM that goes down and comes back.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

# One scripted answer: a status, a status with extra headers, or "reset" (drop the connection unanswered).
Reply = int | tuple[int, dict[str, str]] | str


def free_port() -> int:
    """A loopback TCP port nothing listens on (at the moment of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Collector:
    """aiosmtpd handler: keeps each message as raw bytes and parsed."""

    def __init__(self, owner: SmtpReceiver) -> None:
        self._owner = owner

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        raw = bytes(envelope.content)
        with self._owner.arrived:
            self._owner.raw.append(raw)
            self._owner.messages.append(email.message_from_bytes(raw, policy=email.policy.default))
            self._owner.arrived.notify_all()
        return "250 Message accepted"


class SmtpReceiver:
    """A plain SMTP server (no TLS, no login) that keeps every message it is given."""

    def __init__(self) -> None:
        self.port = free_port()
        self.raw: list[bytes] = []
        self.messages: list[EmailMessage] = []
        self.arrived = threading.Condition()
        self._controller = Controller(_Collector(self), hostname="127.0.0.1", port=self.port)

    def url(self, to: str = "owner@example.org", sender: str = "linerec@example.org") -> str:
        """The apprise ``mailto://`` URL that sends to this server over plain SMTP."""
        return f"mailto://127.0.0.1:{self.port}?mode=insecure&from={sender}&to={to}"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def wait(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """The messages, once there are at least ``count`` (or whatever came within ``timeout``)."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


@dataclass(frozen=True)
class Hit:
    """One request the webhook endpoint received."""

    path: str  # with the query
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.monotonic() on arrival
    answer: Reply


class WebhookReceiver:
    """A ``ThreadingHTTPServer`` in a thread that records each POST and answers from ``script``."""

    def __init__(self, port: int | None = None, script: Iterable[Reply] = ()) -> None:
        self.port = port or free_port()
        self.script: deque[Reply] = deque(script)
        self.hits: list[Hit] = []
        self.arrived = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/linerec"

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="webhook-receiver", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def wait(self, count: int, timeout: float = 10.0) -> list[Hit]:
        """The hits, once there are at least ``count`` (or whatever came within ``timeout``)."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.hits) >= count, timeout)
            return list(self.hits)

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self.arrived:
            answer = self.script.popleft() if self.script else 200
            self.hits.append(Hit(path=path, headers=headers, body=body, at=time.monotonic(), answer=answer))
            self.arrived.notify_all()
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                answer = receiver._answer(self.path, headers, body)
                if answer == "reset":
                    # SO_LINGER 0: close sends a reset, as a crashing or overloaded server would.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    self.close_connection = True
                    return
                status, extra = answer if isinstance(answer, tuple) else (int(answer), {})
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
