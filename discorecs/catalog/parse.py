"""Parse a chunk of the Discogs releases dump (whole ``<release>`` elements) into columns.

This is the pure core of the catalog ingest: bytes in, :class:`ParsedChunk` out, no I/O.

Speed comes from doing the per-release work in C:

1. the sections the catalog does not keep (tracklist, videos, notes, identifiers, credits,
   companies, images: ~70 % of the bytes) are cut out with ``bytes.find``;
2. libxml2 parses what is left of the whole chunk at once;
3. one XSLT transform flattens every release into a line of separated fields, which Python
   only has to split.

A chunk that does not parse as a whole is parsed again release by release: a release whose XML
is broken is repaired where that is safe (control characters, invalid character references,
undefined entities) or rejected with its byte offset and reason, and the rest are kept.
"""

from __future__ import annotations

import html.entities
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

# Private-use characters: they never occur in Discogs text, and a record that happens to contain
# one fails the field-count check and takes the release-by-release path instead.
FIELD_SEP = "\ue000"
ITEM_SEP = "\ue001"
RECORD_SEP = "\ue002"

DROPPED_SECTIONS = (
    b"tracklist",
    b"videos",
    b"notes",
    b"identifiers",
    b"extraartists",
    b"companies",
    b"images",
)

# The catalog columns, in the order the XSLT emits them.
FIELDS = (
    "release_id",
    "status",
    "title",
    "artists",
    "genres",
    "styles",
    "country",
    "released",
    "data_quality",
    "master_id",
    "is_main_release",
    "formats",
    "labels",
)
LIST_FIELDS = frozenset({"artists", "genres", "styles", "formats", "labels"})


def _xslt_for_fields() -> etree.XSLT:
    select = {
        "release_id": "@id",
        "status": "@status",
        "title": "title",
        "country": "country",
        "released": "released",
        "data_quality": "data_quality",
        "master_id": "master_id",
        "is_main_release": "master_id/@is_main_release",
        "artists": "artists/artist/name",
        "genres": "genres/genre",
        "styles": "styles/style",
        "formats": "formats/format/@name",
        "labels": "labels/label/@name",
    }
    parts = []
    for name in FIELDS:
        if name in LIST_FIELDS:
            parts.append(
                f'<xsl:for-each select="{select[name]}"><xsl:value-of select="."/>'
                f"{ITEM_SEP}</xsl:for-each>"
            )
        else:
            parts.append(f'<xsl:value-of select="{select[name]}"/>')
    body = FIELD_SEP.join(parts)
    stylesheet = (
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        '<xsl:output method="text" encoding="UTF-8"/>'
        '<xsl:template match="/releases"><xsl:for-each select="release">'
        f"{body}{RECORD_SEP}</xsl:for-each></xsl:template></xsl:stylesheet>"
    )
    return etree.XSLT(etree.XML(stylesheet.encode()))


_FLATTEN = _xslt_for_fields()
_PARSER = etree.XMLParser(huge_tree=True, resolve_entities=False, no_network=True)


@dataclass
class Reject:
    """A release that could not be read: where, which (if its id is legible) and why."""

    offset: int
    release_id: str | None
    reason: str
    snippet: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "release_id": self.release_id,
            "reason": self.reason,
            "snippet": self.snippet,
        }


@dataclass
class ParsedChunk:
    """Columns of the releases in one chunk, plus what went wrong in it."""

    columns: dict[str, list[Any]] = field(default_factory=lambda: {name: [] for name in FIELDS})
    rejects: list[Reject] = field(default_factory=list)
    repaired: list[dict[str, Any]] = field(default_factory=list)
    duplicates_in_chunk: int = 0

    @property
    def count(self) -> int:
        return len(self.columns["release_id"])

    def genre_counts(self) -> Counter[str]:
        return Counter(genre for genres in self.columns["genres"] for genre in genres)


def drop_sections(xml: bytes) -> bytes:
    """Cut out the sections the catalog does not keep (see ``DROPPED_SECTIONS``)."""
    for tag in DROPPED_SECTIONS:
        opening, closing = b"<" + tag + b">", b"</" + tag + b">"
        start = xml.find(opening)
        if start < 0:
            continue
        kept, position = [], 0
        while start >= 0:
            end = xml.find(closing, start)
            if end < 0:
                break  # unclosed: leave it for the parser to report
            kept.append(xml[position:start])
            position = end + len(closing)
            start = xml.find(opening, position)
        kept.append(xml[position:])
        xml = b"".join(kept)
    return xml


def count_release_starts(xml: bytes) -> int:
    """How many ``<release`` elements begin in ``xml`` (``<`` cannot occur in text or
    attribute values of well-formed XML, so this count is exact for valid input)."""
    return xml.count(b"<release ") + xml.count(b"<release>")


def parse_chunk(xml: bytes, offset: int) -> ParsedChunk:
    """Parse whole ``<release>`` elements starting at uncompressed byte ``offset`` of the dump.

    Fast path: the chunk at once. If that fails, or the release count after parsing does not
    match the count of ``<release`` starts, fall back to release-by-release parsing.
    """
    expected = count_release_starts(xml)
    try:
        records = _flatten(drop_sections(xml))
    except (etree.XMLSyntaxError, _FieldCountError):
        records = None
    if records is not None and len(records) == expected:
        chunk = ParsedChunk()
        for record in records:
            _append_record(chunk, record, offset, None)
        return chunk
    return parse_release_by_release(xml, offset)


def parse_release_by_release(xml: bytes, offset: int) -> ParsedChunk:
    """The careful path: each release parsed alone, repaired if needed, else rejected."""
    chunk = ParsedChunk()
    starts = [m.start() for m in _RELEASE_START.finditer(xml)]
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(xml)
        segment = xml[start:end].rstrip()
        at = offset + start
        try:
            records = _flatten(drop_sections(segment))
        except (etree.XMLSyntaxError, _FieldCountError) as first_error:
            repaired, fixes = repair(segment)
            try:
                records = _flatten(drop_sections(repaired)) if fixes else None
            except (etree.XMLSyntaxError, _FieldCountError):
                records = None
            if not records:
                chunk.rejects.append(
                    Reject(
                        at,
                        _legible_id(segment),
                        f"XML error: {_error_text(first_error)}",
                        _snippet(segment),
                    )
                )
                continue
            chunk.repaired.append(
                {"offset": at, "release_id": _legible_id(segment), "repairs": fixes}
            )
        if len(records) != 1:
            chunk.rejects.append(
                Reject(
                    at,
                    _legible_id(segment),
                    f"expected one release, found {len(records)}",
                    _snippet(segment),
                )
            )
            continue
        _append_record(chunk, records[0], at, segment)
    return chunk


class _FieldCountError(ValueError):
    pass


_RELEASE_START = re.compile(rb"<release[ >]")


def _flatten(xml: bytes) -> list[list[str]]:
    root = etree.fromstring(b"<releases>" + xml + b"</releases>", _PARSER)
    text = str(_FLATTEN(root))
    records = [record.split(FIELD_SEP) for record in text.split(RECORD_SEP)[:-1]]
    if any(len(record) != len(FIELDS) for record in records):
        raise _FieldCountError("a text value contains a separator character")
    return records


def _append_record(
    chunk: ParsedChunk, record: list[str], offset: int, segment: bytes | None
) -> None:
    (
        release_id,
        status,
        title,
        artists,
        genres,
        styles,
        country,
        released,
        data_quality,
        master_id,
        is_main,
        formats,
        labels,
    ) = record
    try:
        release_number = int(release_id)
        if release_number <= 0:
            raise ValueError
    except ValueError:
        reason = (
            "release without id"
            if not release_id
            else f"release id {release_id!r} is not a positive number"
        )
        chunk.rejects.append(
            Reject(offset, release_id or None, reason, _snippet(segment) if segment else "")
        )
        return
    columns = chunk.columns
    columns["release_id"].append(release_number)
    columns["status"].append(status or None)
    columns["title"].append(title.strip() or None)
    columns["artists"].append(_items(artists))
    columns["genres"].append(_items(genres))
    columns["styles"].append(_items(styles))
    columns["country"].append(country.strip() or None)
    columns["released"].append(released.strip() or None)
    columns["data_quality"].append(data_quality or None)
    master = _positive_int(master_id)
    columns["master_id"].append(master)
    columns["is_main_release"].append(
        None if master is None else {"true": True, "false": False}.get(is_main.strip())
    )
    columns["formats"].append(_items(formats))
    columns["labels"].append(_items(labels))


def release_year(released: str | None) -> int | None:
    """The year of a ``released`` value: ``YYYY``, ``YYYY-MM-DD``, ``YYYY-00-00``; else None."""
    if released and len(released) >= 4 and released[:4].isdigit():
        year = int(released[:4])
        return year if year > 0 else None
    return None


def _items(joined: str) -> list[str]:
    return [item.strip() for item in joined.split(ITEM_SEP)[:-1] if item.strip()]


def _positive_int(text: str) -> int | None:
    text = text.strip()
    if text.isdigit():
        number = int(text)
        return number if number > 0 else None
    return None


# -- repairs -------------------------------------------------------------------------------------

# Bytes XML 1.0 forbids anywhere in a document (tab, newline and carriage return are allowed).
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 13))
# Character references to those same characters (&#1; &#x1F; ...).
_BAD_CHAR_REF = re.compile(
    rb"&#(?:[xX]0*(?:[0-8bBcCeE]|[fF]|1[0-9a-fA-F])|0*(?:[0-8]|1[124-9]|2[0-9]|3[01]));"
)
_ENTITY = re.compile(rb"&([A-Za-z][A-Za-z0-9]*);")
_BARE_AMPERSAND = re.compile(rb"&(?!(?:[A-Za-z][A-Za-z0-9]*|#[0-9]+|#[xX][0-9a-fA-F]+);)")
_XML_ENTITIES = frozenset({b"amp", b"lt", b"gt", b"quot", b"apos"})


def repair(xml: bytes) -> tuple[bytes, list[str]]:
    """Fix the text-level faults seen in real dumps; returns the new bytes and what was fixed.

    - control characters XML forbids are removed;
    - character references to such characters are removed;
    - HTML entities XML does not define (``&eacute;``) become the character they name, unknown
      ones and bare ``&`` are escaped so their text is kept literally.
    """
    fixes = []
    cleaned = xml.translate(None, _CONTROL_BYTES)
    if len(cleaned) != len(xml):
        fixes.append(f"removed {len(xml) - len(cleaned)} control character(s)")
    cleaned, count = _BAD_CHAR_REF.subn(b"", cleaned)
    if count:
        fixes.append(f"removed {count} invalid character reference(s)")
    replaced = 0

    def entity(match: re.Match[bytes]) -> bytes:
        nonlocal replaced
        name = match.group(1)
        if name in _XML_ENTITIES:
            return match.group(0)
        replaced += 1
        character = html.entities.html5.get(name.decode() + ";")
        return character.encode() if character else b"&amp;" + name + b";"

    cleaned = _ENTITY.sub(entity, cleaned)
    if replaced:
        fixes.append(f"replaced {replaced} undefined entit{'y' if replaced == 1 else 'ies'}")
    cleaned, count = _BARE_AMPERSAND.subn(b"&amp;", cleaned)
    if count:
        fixes.append(f"escaped {count} bare ampersand(s)")
    return cleaned, fixes


def _legible_id(segment: bytes) -> str | None:
    match = re.match(rb'<release[^>]*?\sid="([^"]*)"', segment)
    return match.group(1).decode("utf-8", "replace") if match else None


def _snippet(segment: bytes) -> str:
    return segment[:200].decode("utf-8", "replace")


def _error_text(error: Exception) -> str:
    return str(error).splitlines()[0][:300]
