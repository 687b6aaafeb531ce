"""A local stand-in for the Hugging Face file server, on 127.0.0.1, for download tests.

Serves a folder's files at /<prefix>/<path> with Content-Length and single-range (Range: bytes=N-) support,
and can misbehave on request: drop the connection midway, stall, alter bytes in transit, send an endless body
without Content-Length, or trickle a byte at a time. It also acts
as a plain HTTP proxy (requests whose target is an absolute http:// URL) so proxy settings can be tested.
Every handler wait is bounded and the server stops when the test's `with` block ends.
"""

from __future__ import annotations

import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_STALL_S = 10.0
MAX_ENDLESS_BYTES = 64 << 20  # an "endless" body ends here at the latest, so a failing test cannot fill the disk


@dataclass
class Misbehaviour:
    drop_after: dict = field(default_factory=dict)  # path -> close after sending this many body bytes (once)
    stall: set = field(default_factory=set)  # paths: send headers and a little, then go silent
    stall_before_headers: set = field(default_factory=set)
    corrupt: set = field(default_factory=set)  # paths: flip one byte in the middle of the body
    ignore_range: bool = False
    pause_per_64k_s: float = 0.0  # slow the transfer down, to measure speed
    redirect_to: str | None = None  # answer 302 to this prefix, as Hugging Face redirects to its CDN
    endless: set = field(default_factory=set)  # paths: no Content-Length, zeros until MAX_ENDLESS_BYTES or stopped
    trickle_s: dict = field(default_factory=dict)  # path -> send the file one byte per this many seconds


@dataclass
class Request:
    path: str
    range: str | None
    proxied: bool


class WeightsServer:
    def __init__(self, folder: Path, prefix: str = "model"):
        self.folder = Path(folder)
        self.prefix = prefix.strip("/")
        self.misbehaviour = Misbehaviour()
        self.requests: list[Request] = []
        self.bytes_sent = 0
        self.stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.prefix}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def file_for(self, url_path: str, prefix: str | None = None) -> Path | None:
        path, prefix = urllib.parse.unquote(url_path), prefix or self.prefix
        if not path.startswith(f"/{prefix}/"):
            return None
        candidate = (self.folder / path[len(prefix) + 2:]).resolve()
        return candidate if candidate.is_file() and self.folder.resolve() in candidate.parents else None


def _handler_for(server: WeightsServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):
            proxied = self.path.startswith("http://")
            url_path = urllib.parse.urlsplit(self.path).path if proxied else self.path.split("?")[0]
            server.requests.append(Request(url_path, self.headers.get("Range"), proxied))
            misbehaviour = server.misbehaviour
            if url_path in misbehaviour.stall_before_headers:
                server.stopping.wait(MAX_STALL_S)
                return
            if misbehaviour.redirect_to and not url_path.startswith(f"/{misbehaviour.redirect_to}/"):
                self.send_response(302)
                self.send_header("Location", f"/{misbehaviour.redirect_to}/{url_path.split('/', 2)[2]}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if url_path in misbehaviour.endless:
                self._send_endless()
                return
            file = server.file_for(url_path, misbehaviour.redirect_to)
            if file is None:
                self.send_error(404, "Entry not found")
                return
            body = file.read_bytes()
            if url_path in misbehaviour.corrupt:
                middle = len(body) // 2
                body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
            start = self._range_start(len(body))
            if start is None:
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            self._send_body(url_path, body[start:])

        def _send_endless(self):
            self.send_response(200)
            self.send_header("Connection", "close")  # the body ends when the connection does
            self.end_headers()
            self.close_connection = True
            block = bytes(65536)
            while server.bytes_sent < MAX_ENDLESS_BYTES and not server.stopping.is_set():
                try:
                    self.wfile.write(block)
                except OSError:  # the client hung up
                    return
                server.bytes_sent += len(block)

        def _range_start(self, size: int) -> int | None:
            header = self.headers.get("Range")
            if not header or server.misbehaviour.ignore_range:
                return 0
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= size:
                self.send_error(416, "Range Not Satisfiable")
                return None
            return start

        def _send_body(self, url_path: str, body: bytes) -> None:
            misbehaviour = server.misbehaviour
            limit = misbehaviour.drop_after.pop(url_path, None)
            if url_path in misbehaviour.stall:
                limit = min(len(body), 1024)
            payload = body if limit is None else body[:limit]
            if url_path in misbehaviour.trickle_s:
                self._trickle(payload, misbehaviour.trickle_s[url_path])
                return
            for offset in range(0, len(payload), 65536):
                server.stopping.wait(misbehaviour.pause_per_64k_s)
                self.wfile.write(payload[offset:offset + 65536])
                server.bytes_sent += len(payload[offset:offset + 65536])
            self.wfile.flush()
            if url_path in misbehaviour.stall:
                server.stopping.wait(MAX_STALL_S)
            if limit is not None:
                self.close_connection = True

        def _trickle(self, payload: bytes, interval_s: float) -> None:
            for byte in payload:
                if server.stopping.wait(interval_s):
                    return
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return
                server.bytes_sent += 1

    return Handler
