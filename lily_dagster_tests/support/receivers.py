"""A real HTTP receiver for outbound-target tests: records every request and answers by script.

    with RecordingReceiver() as receiver:
        receiver.script([503, 503, 200])        # then the default (200 "ok")
        ... deliver to receiver.url ...
        assert [r.json() for r in receiver.requests] == ...

Script items are a status, or (status, body) for bodies such as Slack's "invalid_payload".
`delay(seconds)` makes every later answer wait (a receiver slower than the target's
timeout); the request is recorded before the wait, so timed-out attempts are counted too.
`stop()` then `start()` brings the receiver back on the same port (a target that was down).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

ScriptItem = int | tuple[int, str | bytes]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return json.loads(self.body)


def closed_port_url(path: str = "/hook") -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


class RecordingReceiver:
    """An HTTP server on 127.0.0.1:<free port>, in a thread; a context manager."""

    def __init__(
        self, path: str = "/hook", default_status: int = 200, default_body: str = "ok"
    ) -> None:
        self.path = path
        self.default: tuple[int, bytes] = (default_status, default_body.encode())
        self._requests: list[RecordedRequest] = []
        self._script: deque[tuple[int, bytes]] = deque()
        self._delay_s = 0.0
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0  # kept across stop/start: a stopped receiver refuses connections
        self._connections: set[socket.socket] = set()

    # --- lifecycle

    def start(self) -> RecordingReceiver:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler_for(self))
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes delayed answers
        self._server.shutdown()
        self._server.server_close()
        # A stopped receiver is down for kept-alive connections too, as a crashed one is.
        with self._cond:
            open_connections = list(self._connections)
        for connection in open_connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
        self._thread = None

    def __enter__(self) -> RecordingReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- where

    @property
    def port(self) -> int:
        """The port, kept after `stop()` (then nothing listens: connection refused) and
        reused by a later `start()` (the target comes back at the same URL)."""
        if not self._port:
            raise RuntimeError("the receiver was never started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.path}"

    # --- behaviour

    def script(self, answers: Iterable[ScriptItem]) -> RecordingReceiver:
        """Answer the next requests with these (status or (status, body)), in order; then
        the default."""
        with self._cond:
            self._script.extend(_answer(a) for a in answers)
        return self

    def delay(self, seconds: float) -> RecordingReceiver:
        """Wait this long before every later answer (0: answer at once)."""
        with self._cond:
            self._delay_s = float(seconds)
        return self

    def reset(self) -> None:
        """Forget the requests, the script and the delay."""
        with self._cond:
            self._requests.clear()
            self._script.clear()
            self._delay_s = 0.0

    # --- what arrived

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._requests)

    def bodies(self) -> list[Any]:
        return [r.json() for r in self.requests]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[RecordedRequest]:
        """The requests once at least `count` arrived; TimeoutError after timeout_s."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self._requests)} of {count} requests within {timeout_s:g} s"
                    )
                self._cond.wait(left)
            return list(self._requests)

    # --- the handler's side

    def _record(self, request: RecordedRequest) -> tuple[int, bytes, float]:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()
            answer = self._script.popleft() if self._script else self.default
            return answer[0], answer[1], self._delay_s


def _answer(item: ScriptItem) -> tuple[int, bytes]:
    if isinstance(item, int):
        return item, (b"ok" if 200 <= item < 300 else f"status {item}".encode())
    status, body = item
    return status, body if isinstance(body, bytes) else body.encode()


def _handler_for(receiver: RecordingReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle's algorithm on, the client's
        # delayed ACK adds ~40 ms to every answer.
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            with receiver._cond:
                receiver._connections.add(self.connection)

        def finish(self) -> None:
            with receiver._cond:
                receiver._connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, answer, delay_s = receiver._record(
                RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
            )
            if delay_s and receiver._stopping.wait(delay_s):
                return  # stopping: drop the answer
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the client gave up (timeout)

        do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
