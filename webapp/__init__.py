"""The discorecs site and JSON API.

``create_app()`` builds the Flask application: one blueprint per area (home, users, genres,
api), a repository object that owns every CQL statement (``webapp.repository``), security
headers on every response, and error pages (HTML or JSON) instead of stack traces.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from discorecs.settings import Settings, load_settings
from webapp.cache import BoundedCache
from webapp.models import Repository
from webapp.repository import CassandraRepository, ServingUnavailable

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def create_app(
    test_config: dict[str, Any] | None = None,
    repository: Repository | None = None,
    settings: Settings | None = None,
) -> Flask:
    """The application; tests pass a fake ``repository``, production builds the Cassandra one."""
    app = Flask(__name__)
    app.config.from_mapping(JSON_SORT_KEYS=False, PAGE_SIZE=50, RESPONSE_CACHE_SIZE=0)
    if repository is None:
        settings = settings or load_settings()
        repository = CassandraRepository(settings)
        app.config["RESPONSE_CACHE_SIZE"] = settings.web_response_cache
    if test_config:
        app.config.update(test_config)
    if not isinstance(repository, Repository):
        raise TypeError(f"{type(repository).__name__} does not serve every read the views make")
    app.extensions["repository"] = repository
    app.extensions["response_cache"] = BoundedCache(app.config["RESPONSE_CACHE_SIZE"])

    from webapp.views import api, genres, home, users

    for blueprint in (home.blueprint, users.blueprint, genres.blueprint, api.blueprint):
        app.register_blueprint(blueprint)

    @app.after_request
    def secure(response):
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        return response

    def wants_json() -> bool:
        return request.path.startswith("/api/")

    @app.errorhandler(ServingUnavailable)
    def unavailable(error: ServingUnavailable):
        cause = error.__cause__
        app.logger.warning(
            "serving unavailable: %s (%s)", error, type(cause).__name__ if cause else "no cause"
        )
        message = "The record store is restarting; try again in a few seconds."
        if wants_json():
            response = jsonify(error={"status": 503, "message": message})
        else:
            response = app.make_response(
                (
                    render_template(
                        "error.html", status=503, title="Back in a moment", message=message
                    ),
                    503,
                )
            )
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if wants_json():
            response = jsonify(error={"status": error.code, "message": error.description})
        else:
            response = app.make_response(
                render_template(
                    "error.html", status=error.code, title=error.name, message=error.description
                )
            )
        response.status_code = error.code
        for name, value in error.get_headers():  # e.g. a 405's Allow
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        app.logger.exception("unhandled error")
        message = "Something went wrong on our side."
        if wants_json():
            return jsonify(error={"status": 500, "message": message}), 500
        return render_template("error.html", status=500, title="Server error", message=message), 500

    return app


def repository() -> Repository:
    from flask import current_app

    return current_app.extensions["repository"]
