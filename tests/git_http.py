"""A local smart-HTTP git server: `git http-backend` behind a small threaded HTTP server.

It answers 401 to any request without the exact Authorization header it was given, so a
push that arrives proves the token travelled. It can be slow on purpose, so a test can
look at `ps` while the push is in flight.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class GitHttpServer:
    def __init__(self, root: Path, *, authorization: str, delay_s: float = 0.0) -> None:
        self.root = root
        self.authorization = authorization
        self.delay_s = delay_s
        self.authorized = 0
        self.refused = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self._body()
                if self.headers.get("Authorization") != server.authorization:
                    server.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="mirror"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                server.authorized += 1
                parts = urlsplit(self.path)
                if server.delay_s and parts.path.endswith("git-receive-pack"):
                    time.sleep(server.delay_s)
                env = {
                    "PATH": os.environ["PATH"],
                    "HOME": os.environ.get("HOME", "/"),
                    "GIT_CONFIG_NOSYSTEM": "1",
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": parts.path,
                    "QUERY_STRING": parts.query,
                    "REQUEST_METHOD": self.command,
                    "REMOTE_USER": "mirror",
                    "REMOTE_ADDR": "127.0.0.1",
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                }
                for header, var in (
                    ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
                    ("Git-Protocol", "GIT_PROTOCOL"),
                ):
                    if self.headers.get(header):
                        env[var] = self.headers[header]
                out = subprocess.run(
                    ["git", "http-backend"],
                    input=body,
                    env=env,
                    capture_output=True,
                    timeout=60,
                    check=False,
                ).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = out.partition(b"\n\n")
                status = 200
                headers = []
                for line in head.decode("latin-1").splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            do_GET = do_POST = _handle

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, repo: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{repo}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
