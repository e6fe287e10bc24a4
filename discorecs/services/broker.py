"""The local Kafka-protocol broker: Tansu 0.6.0, a single static binary, in-memory storage.

Topics live in memory: they are gone when the broker stops. That suits local runs and tests;
a cluster runs Apache Kafka (see DEPLOYMENT_README.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from kafka import KafkaAdminClient

from discorecs.services.base import LocalService, ServiceError, ensure_dir, loopback
from discorecs.services.install import BROKER_VERSION, ensure_broker_binary

# Tansu reads these from the environment too; an inherited one would override our flags
# (e.g. LISTENER_URL opening the broker on 0.0.0.0), so they are removed.
_TANSU_ENV = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "STORAGE_ENGINE",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "CLUSTER_ID",
    "SCHEMA_REGISTRY",
)


class KafkaBroker(LocalService):
    name = "kafka broker"
    key = "broker"
    start_timeout = 30.0
    # Tansu drains connected clients on SIGTERM, which can take as long as they stay; its
    # storage is in memory, so there is nothing to lose by killing it sooner.
    stop_timeout = 5.0

    def ports(self) -> tuple[int, ...]:
        return (self._address()[1],)

    def _address(self) -> tuple[str, int]:
        host, port = self.settings.broker_address
        if not loopback(host):
            raise ServiceError(
                f"{self.name}: DISCORECS_KAFKA_BOOTSTRAP_SERVERS points at {host}, not this "
                "machine; `discorecs up` only starts a broker on 127.0.0.1 (use 127.0.0.1:<port>)"
            )
        return "127.0.0.1", port

    def install(self) -> None:
        self.binary = ensure_broker_binary(self.settings.cache_dir)

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self._address()[1]}"
        ensure_dir(self.dir)
        return [
            str(self.binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def environment(self) -> Mapping[str, str]:
        return {key: value for key, value in os.environ.items() if key not in _TANSU_ENV}

    def probe(self) -> str:
        admin = KafkaAdminClient(
            bootstrap_servers=f"127.0.0.1:{self._address()[1]}",
            request_timeout_ms=3000,
            client_id="discorecs-probe",
        )
        try:
            admin.list_topics()  # a real metadata request
        finally:
            admin.close()
        return BROKER_VERSION

    def hint(self) -> str:
        return f"see {self.log_path}; a free port can be set with DISCORECS_KAFKA_BOOTSTRAP_SERVERS"

    def port_setting_hint(self, port: int) -> str:
        return "set DISCORECS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<another port>"
