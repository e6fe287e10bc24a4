"""The serving schema (``schema.cql``), shipped with the package so cluster nodes have it too."""

from __future__ import annotations

from pathlib import Path

SCHEMA_FILE = Path(__file__).with_name("schema.cql")


def table_statements(schema_file: Path = SCHEMA_FILE) -> list[str]:
    """The CQL statements of the schema file, comments removed, in file order."""
    lines = [
        line for line in schema_file.read_text().splitlines() if not line.lstrip().startswith("--")
    ]
    statements = (" ".join(chunk.split()) for chunk in "\n".join(lines).split(";"))
    return [statement for statement in statements if statement]
