"""Cutting a dump into chunks: every release exactly once, and truncation found with offsets."""

import gzip
import itertools

import pytest

from discorecs.catalog.chunks import DumpError, DumpReader
from tests.catalog_fixtures import dump_text, release, write

RELEASES = [release(n, title=f"Title {n} " + "x" * (n % 50)) for n in range(1, 301)]


@pytest.mark.parametrize("name", ["dump.xml", "dump.xml.gz"])
@pytest.mark.parametrize("chunk_bytes", [1, 1000, 10_000, 1 << 20])
def test_every_release_lands_in_exactly_one_chunk(tmp_path, name, chunk_bytes):
    path = write(tmp_path / name, dump_text(*RELEASES))
    chunks = list(DumpReader(path, chunk_bytes).chunks())
    # Chunks end at a </release>: only the newline before </releases> is in none of them.
    assert b"".join(c.data for c in chunks) == "".join(RELEASES).encode().rstrip(b"\n")
    assert [c.index for c in chunks] == list(range(len(chunks)))
    header = len(b"<releases>\n")
    assert chunks[0].offset == header
    for previous, current in itertools.pairwise(chunks):
        assert current.offset == previous.offset + len(previous.data)


def test_xml_declaration_and_concatenated_gzip_members(tmp_path):
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + dump_text(*RELEASES[:10])
    middle = len(text) // 2
    path = tmp_path / "multi.xml.gz"
    path.write_bytes(gzip.compress(text[:middle].encode()) + gzip.compress(text[middle:].encode()))
    data = b"".join(c.data for c in DumpReader(path, 100).chunks())
    assert data == "".join(RELEASES[:10]).encode().rstrip(b"\n")


def test_truncated_gzip_reports_where(tmp_path):
    whole = gzip.compress(dump_text(*RELEASES).encode())
    path = tmp_path / "cut.xml.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        DumpError,
        match=r"cut\.xml\.gz: the gzip stream ends early .* at XML "
        r"byte [\d,]+; the file is truncated",
    ):
        list(DumpReader(path, 1000).chunks())


def test_xml_cut_mid_release_reports_the_offset(tmp_path):
    text = dump_text(*RELEASES[:5])
    cut_at = text.index('<release id="4"') + 30
    path = write(tmp_path / "cut.xml", text[:cut_at])
    expected = len(text[: text.index('<release id="4"')].encode())
    with pytest.raises(DumpError, match=rf"a release is cut off at XML byte {expected:,}"):
        list(DumpReader(path, 100).chunks())


def test_missing_closing_root_is_truncation(tmp_path):
    path = write(tmp_path / "open.xml", "<releases>\n" + "".join(RELEASES[:3]))
    with pytest.raises(DumpError, match="</releases> is missing"):
        list(DumpReader(path).chunks())


def test_a_dump_of_something_else_is_named(tmp_path):
    path = write(tmp_path / "artists.xml", "<artists><artist><id>1</id></artist></artists>")
    with pytest.raises(DumpError, match="not a Discogs releases dump"):
        list(DumpReader(path).chunks())


def test_corrupt_gzip_bytes(tmp_path):
    whole = bytearray(gzip.compress(dump_text(*RELEASES).encode()))
    whole[len(whole) // 2 : len(whole) // 2 + 64] = b"\x00" * 64
    path = tmp_path / "bad.xml.gz"
    path.write_bytes(bytes(whole))
    with pytest.raises(DumpError, match=r"bad\.xml\.gz: (corrupt gzip data|the gzip stream)"):
        list(DumpReader(path, 1000).chunks())


def test_empty_dump_is_valid(tmp_path):
    path = write(tmp_path / "empty.xml", "<releases>\n</releases>\n")
    assert list(DumpReader(path).chunks()) == []
