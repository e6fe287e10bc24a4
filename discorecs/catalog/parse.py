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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lxml import etree

from discorecs.catalog.schema import RELEASE_COLUMNS, RELEASE_SCHEMA

# Private-use characters: they never occur in Discogs text, and a record that happens to contain
# one fails the field-count check and takes the release-by-release path instead.
FIELD_SEP = "\ue000"
ITEM_SEP = "\ue001"

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
            # Each item preceded by ITEM_SEP: "" is no items, "|a|b" two (see _list_column).
            parts.append(
                f'<xsl:for-each select="{select[name]}">{ITEM_SEP}<xsl:value-of select="."/>'
                "</xsl:for-each>"
            )
        else:
            parts.append(f'<xsl:value-of select="{select[name]}"/>')
        parts.append(FIELD_SEP)
    stylesheet = (
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        '<xsl:output method="text" encoding="UTF-8"/>'
        '<xsl:template match="/releases"><xsl:for-each select="release">'
        f"{''.join(parts)}</xsl:for-each></xsl:template></xsl:stylesheet>"
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
    """The releases of one chunk as an Arrow table, plus what went wrong in it."""

    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)
    repaired: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.table.num_rows

    @property
    def columns(self) -> dict[str, list[Any]]:
        return self.table.to_pydict()

    def genre_counts(self) -> Counter[str]:
        counts = pc.value_counts(pc.list_flatten(self.table["genres"])).to_pylist()
        return Counter({entry["values"]: entry["counts"] for entry in counts})


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

    Fast path: the chunk at once. If that fails, if the number of releases parsed differs
    from the number of ``<release`` starts, or if any id is unusable, the chunk is parsed
    again release by release, which knows each release's offset for the rejects file.
    """
    expected = count_release_starts(xml)
    try:
        fields = _flatten(drop_sections(xml))
    except (etree.XMLSyntaxError, _FieldCountError):
        fields = None
    if fields is not None and len(fields) == len(FIELDS) * expected:
        ids = fields[0 :: len(FIELDS)]
        if all(map(_is_release_id, ids)):
            return ParsedChunk(releases_table(fields))
    return parse_release_by_release(xml, offset)


def parse_release_by_release(xml: bytes, offset: int) -> ParsedChunk:
    """The careful path: each release parsed alone, repaired if needed, else rejected."""
    kept: list[str] = []
    rejects: list[Reject] = []
    repaired: list[dict[str, Any]] = []
    starts = [m.start() for m in _RELEASE_START.finditer(xml)]
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(xml)
        segment = xml[start:end].rstrip()
        at = offset + start
        try:
            fields = _flatten(drop_sections(segment))
        except (etree.XMLSyntaxError, _FieldCountError) as first_error:
            fixed, fixes = repair(segment)
            try:
                fields = _flatten(drop_sections(fixed)) if fixes else None
            except (etree.XMLSyntaxError, _FieldCountError):
                fields = None
            if not fields:
                reason = f"XML error: {_error_text(first_error)}"
                rejects.append(Reject(at, _legible_id(segment), reason, _snippet(segment)))
                continue
            repaired.append({"offset": at, "release_id": _legible_id(segment), "repairs": fixes})
        if len(fields) != len(FIELDS):
            found = len(fields) // len(FIELDS)
            reason = f"expected one release, found {found}"
            rejects.append(Reject(at, _legible_id(segment), reason, _snippet(segment)))
            continue
        release_id = fields[0].strip()
        if not _is_release_id(release_id):
            reason = (
                "release without id"
                if not release_id
                else f"release id {release_id!r} is not a positive number"
            )
            rejects.append(Reject(at, release_id or None, reason, _snippet(segment)))
            continue
        kept.extend(fields)
    return ParsedChunk(releases_table(kept), rejects, repaired)


class _FieldCountError(ValueError):
    pass


_RELEASE_START = re.compile(rb"<release[ >]")


def _flatten(xml: bytes) -> list[str]:
    """All fields of all releases in ``xml``, flat: release k's fields are
    ``[k * len(FIELDS), (k + 1) * len(FIELDS))``."""
    root = etree.fromstring(b"<releases>" + xml + b"</releases>", _PARSER)
    fields = str(_FLATTEN(root)).split(FIELD_SEP)
    fields.pop()  # the text ends with a separator
    if len(fields) % len(FIELDS):
        raise _FieldCountError("a text value contains a separator character")
    return fields


def releases_table(fields: list[str]) -> pa.Table:
    """Typed catalog columns from flat fields (vectorised: no per-release Python)."""
    width = len(FIELDS)
    raw = {name: pa.array(fields[i::width], pa.string()) for i, name in enumerate(FIELDS)}
    columns: dict[str, pa.Array] = {}
    for name, values in raw.items():
        if name in LIST_FIELDS:
            columns[name] = _list_column(values)
        elif name not in ("release_id", "master_id", "is_main_release"):
            columns[name] = _text_column(values)
    columns["release_id"] = pc.cast(pc.utf8_trim_whitespace(raw["release_id"]), pa.int64())
    master = raw["master_id"]
    master_ok = pc.and_(_is_positive_number(master), pc.not_equal(pc.utf8_ltrim(master, "0"), ""))
    columns["master_id"] = pc.if_else(
        master_ok, pc.cast(_digits_or_zero(master), pa.int64()), pa.scalar(None, pa.int64())
    )
    main = pc.utf8_trim_whitespace(raw["is_main_release"])
    columns["is_main_release"] = pc.if_else(
        pc.and_(master_ok, pc.is_in(main, value_set=pa.array(["true", "false"]))),
        pc.equal(main, "true"),
        pa.scalar(None, pa.bool_()),
    )
    columns["year"] = years_from_released(columns["released"])
    return pa.table({name: columns[name] for name in RELEASE_COLUMNS}, schema=RELEASE_SCHEMA)


def years_from_released(released: pa.Array) -> pa.Array:
    """The year of each ``released`` value (``YYYY``, ``YYYY-MM-DD``, ``YYYY-00-00``); null
    where it is absent, not four digits, or ``0000``."""
    head = pc.utf8_slice_codeunits(pc.fill_null(released, ""), 0, 4)
    valid = pc.and_(pc.equal(pc.utf8_length(head), 4), pc.utf8_is_digit(head))
    years = pc.cast(_digits_or_zero(pc.if_else(valid, head, "0")), pa.int32())
    return pc.if_else(pc.greater(years, 0), years, pa.scalar(None, pa.int32()))


def _is_release_id(text: str) -> bool:
    text = text.strip()
    return text.isdigit() and 0 < int(text) < 10**18


def _is_positive_number(values: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.and_(pc.utf8_is_digit(trimmed), pc.greater(pc.utf8_length(trimmed), 0))


def _digits_or_zero(values: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(values)
    # Discogs ids fit in 18 digits; longer digit strings are nonsense, not overflow.
    ok = pc.and_(_is_positive_number(trimmed), pc.less_equal(pc.utf8_length(trimmed), 18))
    return pc.if_else(ok, trimmed, "0")


def _text_column(values: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _list_column(values: pa.Array) -> pa.Array:
    """``""`` -> ``[]``, ``"|a|b"`` -> ``["a", "b"]`` (``|`` being ``ITEM_SEP``); items
    trimmed, empty items dropped."""
    split = pc.list_slice(pc.split_pattern(values, ITEM_SEP), 1)
    items = pc.utf8_trim_whitespace(pc.list_flatten(split))
    if not pc.any(pc.equal(items, "")).as_py():
        return pa.ListArray.from_arrays(split.offsets, items)
    keep = pc.not_equal(items, "")
    parents = pc.list_parent_indices(split)
    counts = np.bincount(
        parents.to_numpy()[keep.to_numpy(zero_copy_only=False)], minlength=len(split)
    )
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), items.filter(keep))


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
