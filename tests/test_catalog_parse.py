"""The pure catalog parser on the real excerpt and on each kind of bad input."""

import gzip
from collections import Counter

import pyarrow as pa
import pytest

from discorecs.catalog.parse import drop_sections, parse_chunk, repair, years_from_released
from discorecs.catalog.schema import keep_last_duplicates
from tests.catalog_fixtures import release


def parse(*releases: str):
    return parse_chunk("".join(releases).encode(), offset=1000)


def test_real_excerpt_parses_to_the_documented_facts(shared_discogs):
    data = gzip.decompress((shared_discogs / "discogs_20200806_releases.xml.gz").read_bytes())
    body = data[data.index(b"<release ") : data.rindex(b"</releases>")]
    chunk = parse_chunk(body, 0)
    assert chunk.count == 1000
    assert chunk.rejects == [] and chunk.repaired == []
    assert chunk.genre_counts() == {
        "Rock": 332,
        "Electronic": 317,
        "Pop": 182,
        "Folk, World, & Country": 112,
        "Classical": 67,
        "Jazz": 65,
        "Funk / Soul": 52,
        "Hip Hop": 43,
        "Stage & Screen": 36,
        "Latin": 30,
        "Blues": 24,
        "Reggae": 19,
        "Non-Music": 11,
        "Children's": 10,
        "Brass & Military": 2,
    }
    columns = chunk.columns
    assert Counter(len(g) for g in columns["genres"]) == {1: 775, 2: 169, 3: 40, 4: 13, 5: 2, 7: 1}
    released = columns["released"]
    assert sum(r is None for r in released) == 118
    assert sum(r is not None and len(r) == 4 for r in released) == 571
    full_dates = [r for r in released if r is not None and len(r) == 10]
    assert len(full_dates) == 311
    assert sum("-00" in r for r in full_dates) == 75
    assert sum(c is None for c in columns["country"]) == 30
    assert len({s for styles in columns["styles"] for s in styles}) == 247
    assert min(columns["release_id"]) == 1 and max(columns["release_id"]) == 14220612
    first = {name: values[0] for name, values in columns.items()}
    assert first == {
        "release_id": 1,
        "status": "Accepted",
        "title": "Stockholm",
        "artists": ["The Persuader"],
        "genres": ["Electronic"],
        "styles": ["Deep House"],
        "country": "Sweden",
        "released": "1999-03-00",
        "year": 1999,
        "data_quality": "Needs Vote",
        "master_id": 1660109,
        "is_main_release": True,
        "formats": ["Vinyl"],
        "labels": ["Svek"],
    }


@pytest.mark.parametrize(
    ("released", "year"),
    [
        ("1999", 1999),
        ("1999-03-00", 1999),
        ("1999-00-00", 1999),
        ("2004-11-23", 2004),
        ("0000", None),
        ("", None),
        (None, None),
        ("19xx", None),
        ("99", None),
    ],
)
def test_year_from_released(released, year):
    assert years_from_released(pa.array([released], pa.string())).to_pylist() == [year]


def test_control_characters_are_repaired_and_the_release_kept():
    chunk = parse(release(1), release(2, title="Bad\x01Title\x1f"), release(3))
    assert chunk.columns["release_id"] == [1, 2, 3]
    assert chunk.columns["title"][1] == "BadTitle"
    assert chunk.repaired == [
        {
            "offset": 1000 + len(release(1).encode()),
            "release_id": "2",
            "repairs": ["removed 2 control character(s)"],
        }
    ]


def test_undefined_entities_and_invalid_character_references_are_repaired():
    chunk = parse(release(7, title="Caf&eacute; &amp; Bar&#1; &unknownthing; R&B"))
    assert chunk.rejects == []
    assert chunk.columns["title"] == ["Café & Bar &unknownthing; R&B"]
    assert chunk.repaired[0]["release_id"] == "7"
    assert chunk.repaired[0]["repairs"] == [
        "removed 1 invalid character reference(s)",
        "replaced 2 undefined entities",
        "escaped 1 bare ampersand(s)",
    ]


def test_repair_leaves_valid_xml_alone():
    valid = release(5, title="Simon &amp; Garfunkel &#228; &#x1F600;").encode()
    assert repair(valid) == (valid, [])


def test_broken_release_is_rejected_with_offset_and_id_and_the_rest_kept():
    broken = '<release id="22" status="Accepted"><title>Oops</titel></release>\n'
    chunk = parse(release(21), broken, release(23))
    assert chunk.columns["release_id"] == [21, 23]
    [reject] = chunk.rejects
    assert reject.release_id == "22"
    assert reject.offset == 1000 + len(release(21).encode())
    assert reject.reason.startswith("XML error:")
    assert "titel" in reject.reason or "mismatch" in reject.reason.lower()


def test_release_without_id_is_rejected():
    chunk = parse(release(None), release(31))
    assert chunk.columns["release_id"] == [31]
    assert [r.reason for r in chunk.rejects] == ["release without id"]
    assert chunk.rejects[0].offset == 1000


def test_non_numeric_id_is_rejected():
    chunk = parse(release(31).replace('id="31"', 'id="x31"'))
    assert chunk.count == 0
    assert chunk.rejects[0].reason == "release id 'x31' is not a positive number"


def test_an_unclosed_section_never_swallows_the_next_release():
    unclosed = '<release id="41" status="Accepted"><title>T</title><notes>never closed</release>\n'
    chunk = parse(release(40), unclosed, release(42))
    assert chunk.columns["release_id"] == [40, 42]
    assert [r.release_id for r in chunk.rejects] == ["41"]


def test_format_drift_across_years():
    drifted = (
        # no images, no status, a <series>, an artist without <id>, master_id 0,
        # a date with 00 parts, a huge qty, unknown elements, numeric refs and raw UTF-8
        '<release id="51"><artists><artist><name>Bj&#246;rk</name></artist>'
        "<artist><id>9</id><name>Sigur Rós</name></artist></artists>"
        "<title>Vespertine &#8531;</title>"
        '<series><series name="Live Series" catno="1" id="4"/></series>'
        '<labels><label name="One Little Indian" catno="TPLP101" id="12"/></labels>'
        '<formats><format name="Vinyl" qty="99999999999999999999" text=""/></formats>'
        "<genres><genre>Electronic</genre><genre>Pop</genre></genres>"
        "<styles><style>Ambient</style></styles><country>UK</country>"
        "<released>2001-00-00</released><future_element>ignored</future_element>"
        '<master_id is_main_release="false">0</master_id></release>\n'
    )
    chunk = parse(drifted)
    assert chunk.rejects == []
    row = {name: values[0] for name, values in chunk.columns.items()}
    assert row == {
        "release_id": 51,
        "status": None,
        "title": "Vespertine ⅓",
        "artists": ["Björk", "Sigur Rós"],
        "genres": ["Electronic", "Pop"],
        "styles": ["Ambient"],
        "country": "UK",
        "released": "2001-00-00",
        "year": 2001,
        "data_quality": None,
        "master_id": None,
        "is_main_release": None,
        "formats": ["Vinyl"],
        "labels": ["One Little Indian"],
    }


def test_duplicate_ids_in_a_chunk_keep_the_later():
    chunk = parse(release(61, title="first"), release(62), release(61, title="second"))
    table, dropped = keep_last_duplicates(chunk.table)
    assert dropped == 1
    assert table.column("release_id").to_pylist() == [62, 61]
    assert table.column("title").to_pylist() == ["A Title", "second"]


def test_drop_sections_removes_only_whole_sections():
    xml = b"<a><notes>x\ny</notes><title>T</title><tracklist><track/></tracklist><notes>z"
    assert drop_sections(xml) == b"<a><title>T</title><notes>z"
