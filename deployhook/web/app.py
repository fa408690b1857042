"""create_app: the WSGI app, its blueprints, and where errors become answers.

Nothing is opened at import time. The Service (settings, registry, store) is built once
and kept on app.extensions; each request handler reaches it through web.context.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from deployhook import errors, log
from deployhook.config import Settings
from deployhook.service import Service
from deployhook.web import admin, answers, fast, logs, metrics, nodes, status, ui, webhook
from deployhook.web.auth import shows_detail


def create_app(
    settings: Settings | None = None,
    *,
    service_: Service | None = None,
    configure_logging: bool = True,
    fast_path: bool = True,
) -> Flask:
    """Build the WSGI app for settings (default: from the environment).

    fast_path: `POST /deploy/<name>` answered by web/fast.py in front of Flask (False:
    by the Flask route alone, which answers the same bytes).
    """
    settings = settings or Settings.load()
    if configure_logging:
        log.configure(fmt=settings.log_format, level=settings.log_level)
    app = Flask("deployhook")
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    svc = app.extensions["deployhook"] = service_ or Service.open(settings)
    if fast_path:
        app.wsgi_app = fast.FastDeliveries(app.wsgi_app, svc)  # type: ignore[method-assign]
    for module in (webhook, status, admin, ui, metrics, logs, nodes):
        app.register_blueprint(module.bp)

    @app.errorhandler(errors.DeployhookError)
    def domain_error(exc: errors.DeployhookError) -> Any:
        code = answers.error_status(exc)
        response = jsonify(answers.error_body(exc, detail=shows_detail()))
        response.status_code = code
        response.headers.extend(answers.error_headers(code))
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        response = jsonify(error=exc.description or exc.name)
        response.status_code = exc.code or 500
        return response

    return app
