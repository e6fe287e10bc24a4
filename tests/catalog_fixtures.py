"""Tiny hand-written releases and dumps for the catalog tests."""

from __future__ import annotations

import gzip
from pathlib import Path


def release(
    release_id: int | None,
    title: str = "A Title",
    genres=("Rock",),
    extra: str = "",
    status: str | None = "Accepted",
) -> str:
    id_attr = f' id="{release_id}"' if release_id is not None else ""
    status_attr = f' status="{status}"' if status else ""
    genres_xml = "".join(f"<genre>{g}</genre>" for g in genres)
    return (
        f"<release{id_attr}{status_attr}><artists><artist><id>1</id><name>Some Artist</name>"
        f"</artist></artists><title>{title}</title><genres>{genres_xml}</genres>{extra}"
        "<notes>line one\nline two</notes></release>\n"
    )


def dump_text(*releases: str) -> str:
    return "<releases>\n" + "".join(releases) + "</releases>\n"


def write(path: Path, text: str | bytes) -> Path:
    data = text.encode() if isinstance(text, str) else text
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path
