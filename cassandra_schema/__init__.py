"""The serving schema (``schema.cql``), shipped with the package so cluster nodes have it too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SCHEMA_FILE = Path(__file__).with_name("schema.cql")


def table_statements(schema_file: Path = SCHEMA_FILE) -> list[str]:
    """The CQL statements of the schema file, comments removed, in file order."""
    lines = [
        line for line in schema_file.read_text().splitlines() if not line.lstrip().startswith("--")
    ]
    statements = (" ".join(chunk.split()) for chunk in "\n".join(lines).split(";"))
    return [statement for statement in statements if statement]


def declared_columns(statement: str) -> dict[str, str]:
    """The columns a ``CREATE TABLE`` statement declares, name -> CQL type as written
    (``map<text, int>``, ``text STATIC``), in order."""
    opened = statement.index("(")
    parts, depth, start = [], 0, opened + 1
    for at in range(opened + 1, len(statement)):
        char = statement[at]
        if char in ",)" and depth == 0:
            parts.append(statement[start:at])
            start = at + 1
            if char == ")":  # the column list's own closing parenthesis
                break
        depth += char in "(<"
        depth -= char in ")>"
    columns = {}
    for part in (part.strip() for part in parts):
        if part and not part.upper().startswith("PRIMARY KEY"):
            name, declared = part.split(None, 1)
            columns[name] = re.sub(r"\s+PRIMARY KEY$", "", declared, flags=re.I)
    return columns


def declared_compaction(statement: str) -> dict[str, str] | None:
    """The ``compaction`` options a ``CREATE TABLE`` statement sets (values as text, the way
    Cassandra reports them), or None where it leaves Cassandra's default."""
    found = re.search(r"\bcompaction\s*=\s*(\{[^}]*\})", statement)
    if found is None:
        return None
    return {name: str(value) for name, value in ast.literal_eval(found.group(1)).items()}
