"""A strict HTTP proxy in front of a real S3 test server that behaves like Backblaze B2.

The test servers (rclone serve s3, moto) accept everything boto3 sends; real vendors do not.
This proxy forwards requests unchanged (the client's Host header too, as it was signed) and
refuses what B2 refuses, with B2's error shape:

- Backblaze's S3-Compatible API page (https://www.backblaze.com/docs/cloud-storage-s3-compatible-api,
  "Unsupported Features", read 2026-11-25) lists the checksum headers as unsupported; B2 answers
  400 ``InvalidArgument`` "Unsupported header 'x-amz-sdk-checksum-algorithm' received for this API
  call." (reports with the exact text: boto/boto3#4409, #4396, home-assistant/core#143995,
  jschneier/django-storages#1498). boto3 >= 1.36 sends that header, ``x-amz-trailer`` and
  ``x-amz-checksum-*`` with ``Content-Encoding: aws-chunked`` bodies by default.
- Clock: AWS refuses a request whose ``x-amz-date`` is more than 15 minutes from its own clock
  with 403 ``RequestTimeTooSkewed`` (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html,
  read 2026-11-25); a HEAD carries no body, so the client sees a bare 403. ``clock_offset``
  sets this server's clock off by that many seconds, i.e. the client's clock looks wrong.

Faults for the retry tests: ``inject(method, path_part, kind)`` breaks the next matching response:
``truncate`` (headers with the full Content-Length, half the body, then the connection is
closed: an IncompleteRead), ``reset`` (the connection is closed with no answer) or
``error:<status>:<code>`` (an S3 XML error).
"""
from __future__ import annotations

import calendar
import http.client
import socket
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

REFUSED_HEADERS = ("x-amz-sdk-checksum-algorithm", "x-amz-trailer", "x-amz-checksum-")
SKEW_LIMIT_S = 15 * 60


@dataclass
class Fault:
    method: str
    path_part: str
    kind: str
    count: int = 1


class StrictS3Proxy:
    def __init__(self, upstream_url: str):
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname, parts.port)
        self.clock_offset = 0.0
        self.faults: list[Fault] = []
        self.refused: list[str] = []  # "METHOD path: header" for every refusal (the tests read it)
        self.requests: list[str] = []  # "METHOD path" of every request seen
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def inject(self, method: str, path_part: str, kind: str, count: int = 1) -> None:
        with self.lock:
            self.faults.append(Fault(method, path_part, kind, count))

    def _take_fault(self, method: str, path: str) -> str | None:
        with self.lock:
            for fault in self.faults:
                if fault.method == method and fault.path_part in path and fault.count > 0:
                    fault.count -= 1
                    return fault.kind
        return None

    def start(self) -> str:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                """Quiet: the tests read .refused and .requests instead of stderr."""

            def _error(self, status: int, code: str, message: str) -> None:
                body = b"" if self.command == "HEAD" else (
                    f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Error>\n    <Code>{code}</Code>\n'
                    f"    <Message>{message}</Message>\n</Error>\n"
                ).encode()
                self.send_response_only(status)  # its own Date header below: this server's clock
                self.send_header("Server", "strict-s3-proxy")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Date", formatdate(time.time() + proxy.clock_offset, usegmt=True))
                self.send_header("Connection", "close")  # the request body may be unread
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def _handle(self) -> None:
                with proxy.lock:
                    proxy.requests.append(f"{self.command} {self.path}")
                for name, value in self.headers.items():
                    lower = name.lower()
                    refused = any(lower.startswith(h) for h in REFUSED_HEADERS) or (
                        lower == "content-encoding" and "aws-chunked" in value.lower())
                    if refused:
                        with proxy.lock:
                            proxy.refused.append(f"{self.command} {self.path}: {lower}")
                        return self._error(400, "InvalidArgument", f"Unsupported header '{lower}' received for this API call.")
                amz_date = self.headers.get("x-amz-date")
                if amz_date:
                    sent = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
                    if abs(time.time() + proxy.clock_offset - sent) > SKEW_LIMIT_S:
                        return self._error(403, "RequestTimeTooSkewed", "The difference between the request time and the server's time is too large.")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._take_fault(self.command, self.path)
                if fault == "reset":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault and fault.startswith("error:"):
                    _, status, code = fault.split(":", 2)
                    return self._error(int(status), code, f"injected {code}")
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(name, value)
                if self.command == "HEAD":  # no body: the object's length as the server said it
                    self.send_header("Content-Length", response.getheader("Content-Length", "0"))
                    self.end_headers()
                    return
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "truncate":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="strict-s3-proxy", daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
