"""The site as a local background service (for the demo): started by ``discorecs demo``,
stopped by ``discorecs down`` like the broker and Cassandra."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

from discorecs import __version__
from discorecs.services.base import LocalService, ensure_dir


class WebSite(LocalService):
    name = "web site"
    key = "web"
    start_timeout = 30.0
    stop_timeout = 15.0

    def ports(self) -> tuple[int, ...]:
        return (self.settings.web_port,)

    def install(self) -> None:
        """Nothing to fetch: the site is part of this package."""

    def command(self) -> list[str]:
        ensure_dir(self.dir)
        return [sys.executable, "-m", "commands.cli", "web", "--port", str(self.settings.web_port)]

    def environment(self) -> Mapping[str, str]:
        # The child reads the same settings as this process, whatever their source.
        return {**os.environ, **self.settings.to_environment()}

    def probe(self) -> str:
        url = f"http://127.0.0.1:{self.settings.web_port}/api/health"
        try:
            with urllib.request.urlopen(url, timeout=3):
                pass
        except urllib.error.HTTPError as error:
            if error.code != 503:  # 503: up, waiting for Cassandra
                raise
        return f"discorecs web {__version__} (gunicorn)"

    def hint(self) -> str:
        return f"see {self.log_path}; a free port can be set with DISCORECS_WEB_PORT"

    def port_setting_hint(self, port: int) -> str:
        return "set DISCORECS_WEB_PORT to another port"
