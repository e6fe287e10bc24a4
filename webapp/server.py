"""``discorecs web``: the site behind gunicorn (production), or Flask's server with ``--dev``."""

from __future__ import annotations

from typing import Any

from discorecs.settings import Settings


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 2,
    threads: int = 4,
    connections: int = 32,
    dev: bool = False,
) -> None:
    from webapp import create_app

    if dev:
        create_app(settings=settings).run(host=host, port=port, debug=False)
        return

    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self) -> None:
            options: dict[str, Any] = {
                "bind": f"{host}:{port}",
                "workers": workers,
                "threads": threads,
                # A worker stops accepting beyond this many open connections: without a cap
                # one worker can take every keep-alive client while another idles (and each
                # worker has its own response cache to keep warm).
                "worker_connections": connections,
                "worker_class": "gthread",
                "accesslog": None,
                "errorlog": "-",
                "timeout": 30,
                "graceful_timeout": 10,
                "keepalive": 5,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            # Each worker builds its own app (and Cassandra session) after the fork.
            return create_app(settings=settings)

    Server().run()
