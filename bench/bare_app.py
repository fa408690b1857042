"""The floor: a bare Flask app answering 202, served by the same gunicorn settings."""

from __future__ import annotations

import sys

from flask import Flask, jsonify, request

app = Flask("bare")


@app.post("/deploy/<repo>")
def deliver(repo: str):  # type: ignore[no-untyped-def]
    request.get_data()
    response = jsonify(status="queued", repo=repo)
    response.status_code = 202
    return response


if __name__ == "__main__":
    from gunicorn.app.base import BaseApplication

    class Bare(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            bind, processes, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
            for key, value in {
                "bind": bind,
                "workers": processes,
                "worker_class": "gthread",
                "threads": threads,
                "accesslog": None,
                "loglevel": "warning",
                "backlog": 2048,
                "keepalive": 5,
            }.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Flask:
            return app

    Bare().run()
