"""The HTTP plumbing: a threading server on loopback that turns each request into an
`Incoming`, hands it to the emulator, and sends the `Answer` back, at once or as a fault.

It knows nothing of leads or limits; what to answer is decided by the callable it is given.
"""

from __future__ import annotations

import logging
import socketserver
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from connector.testing.emulator.faults import Faults, drip_pieces, dripped_head
from connector.testing.emulator.wire import Answer, Incoming

logger = logging.getLogger(__name__)


class EmulatorServer(ThreadingHTTPServer):
    """Serves on `address`, asking `serve` what to answer and `faults` how to send it."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], serve: Callable[[Incoming], Answer], faults: Faults
    ) -> None:
        self.serve = serve
        self.faults = faults
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall for seconds where
        # DNS is slow; a loopback test server has no use for the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            # A client that gave up (the point of hold, latency and timeouts) is expected.
            logger.debug("emulator: a client went away before its answer")
            return
        logger.exception("emulator: failed to answer a request")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real clients use a connection pool
    server_version = "LeadSquaredEmulator"
    sys_version = ""
    # Headers and body go out in two writes; with Nagle on, each answer would wait for the
    # client's delayed ACK (about 40 ms on Linux).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        # The request line in `args` carries the secret key, so only method and path are kept.
        path = urlsplit(getattr(self, "path", "")).path
        logger.debug("emulator: %s %s", getattr(self, "command", ""), path)

    def _dispatch(self) -> None:
        server = self.server
        if not isinstance(server, EmulatorServer):
            raise TypeError("the emulator handler only runs inside an emulator server")
        faults = server.faults
        answer = server.serve(self._incoming())
        if answer.action in ("drop", "timeout"):
            self.close_connection = True
            return
        if answer.action in ("huge", "huge-chunked"):
            self._send_huge(faults, chunked=answer.action == "huge-chunked")
            return
        if answer.action == "drip-head":
            self._send_dripped_head(faults, answer)
            return
        pieces, pause = faults.body_pieces(answer)
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(sum(map(len, pieces))))
            self.end_headers()
            faults.write_pieces(pieces, pause, self.wfile.write)
        except OSError:
            # The client went away while its answer was held, delayed or dripping.
            self.close_connection = True

    def _send_dripped_head(self, faults: Faults, answer: Answer) -> None:
        head = dripped_head(answer, faults.drip_seconds)
        pieces, pause = drip_pieces(head, faults.drip_seconds)
        try:
            faults.write_pieces(pieces, pause, self.wfile.write)
            self.wfile.write(answer.body)
        except OSError:
            pass  # the client gave up on it, as it should
        self.close_connection = True

    def _send_huge(self, faults: Faults, chunked: bool) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(faults.huge_bytes))
            # Said up front: a client that read the whole body would otherwise send its next
            # request on this connection, and race the server closing it.
            self.send_header("Connection", "close")
            self.end_headers()
            for piece in faults.huge_pieces():
                if chunked:
                    self.wfile.write(b"%X\r\n%s\r\n" % (len(piece), piece))
                else:
                    self.wfile.write(piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client stopped reading, as it should
        # Cut short by stop(), or not: the connection cannot carry another answer in step.
        self.close_connection = True

    def _incoming(self) -> Incoming:
        url = urlsplit(self.path)
        query: dict[str, str] = {}
        for name, value in parse_qsl(url.query, keep_blank_values=True):
            query.setdefault(name.lower(), value)
        # The body is always read, even when unused, so a kept-alive connection stays in step.
        return Incoming(
            method=self.command,
            path=url.path,
            query=query,
            header_access_key=self.headers.get("x-LSQ-AccessKey"),
            header_secret_key=self.headers.get("x-LSQ-SecretKey"),
            content_type=self.headers.get("Content-Type", ""),
            body=self.rfile.read(self._content_length()),
        )

    def _content_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length", "0")))
        except ValueError:
            return 0
