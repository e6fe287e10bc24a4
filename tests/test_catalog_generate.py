"""The dump generator: reproducible, parseable, and with the distributions it promises."""

import itertools
from collections import Counter

import pytest

from commands.cli import main
from discorecs.catalog import vocabulary
from discorecs.catalog.generate import generate_dump_text, write_dump
from discorecs.catalog.parse import parse_chunk
from discorecs.genres import GENRES

N = 6000


@pytest.fixture(scope="module")
def generated():
    text = "".join(generate_dump_text(N, seed=11)).encode()
    body = text[text.index(b"<release ") : text.rindex(b"</releases>")]
    return text, parse_chunk(body, 0)


def test_same_seed_same_bytes_other_seed_other_bytes():
    first = "".join(generate_dump_text(300, seed=1))
    assert first == "".join(generate_dump_text(300, seed=1))
    assert first != "".join(generate_dump_text(300, seed=2))


def test_every_release_parses_and_ids_are_sparse_and_increasing(generated):
    _, chunk = generated
    assert chunk.count == N and not chunk.rejects and not chunk.repaired
    ids = chunk.columns["release_id"]
    assert all(b > a for a, b in itertools.pairwise(ids))
    mean_gap = (ids[-1] - ids[0]) / (len(ids) - 1)
    assert 1.8 < mean_gap < 2.2


def test_genre_distribution_follows_the_real_dump(generated):
    _, chunk = generated
    per_release = Counter(len(genres) for genres in chunk.columns["genres"])
    for count, share in vocabulary.GENRES_PER_RELEASE.items():
        assert abs(per_release[count] / N - share) < 0.02, count
    counts = chunk.genre_counts()
    assert set(counts) == set(GENRES)
    assert counts.most_common(2)[0][0] in ("Rock", "Electronic")
    assert counts["Rock"] > 5 * counts["Blues"] > 5 * counts["Brass & Military"]


def test_styles_come_from_the_release_genres_with_a_real_sized_vocabulary(generated):
    _, chunk = generated
    styles = Counter(s for row in chunk.columns["styles"] for s in row)
    assert len(styles) > 250
    assert sum(len(row) == 0 for row in chunk.columns["styles"]) / N == pytest.approx(
        0.07, abs=0.02
    )
    for genres, row in zip(chunk.columns["genres"], chunk.columns["styles"], strict=True):
        allowed = {s for g in genres for s in vocabulary.STYLES[g]}
        assert set(row) <= allowed
    assert styles.most_common(1)[0][0] in {"House", "Pop Rock", "Techno", "Ballad"}


def test_dates_countries_masters_and_notes(generated):
    text, chunk = generated
    released = chunk.columns["released"]
    assert sum(r is None for r in released) / N == pytest.approx(0.12, abs=0.02)
    assert sum(r is not None and len(r) == 4 for r in released) / N == pytest.approx(0.57, abs=0.02)
    assert sum(r is not None and r.endswith("-00") for r in released) / N == pytest.approx(
        0.08, abs=0.02
    )
    assert sum(c is None for c in chunk.columns["country"]) / N == pytest.approx(0.03, abs=0.01)
    assert sum(m is not None for m in chunk.columns["master_id"]) / N == pytest.approx(
        0.6, abs=0.03
    )
    years = chunk.table.column("year").to_pylist()
    assert 1985 < sum(y for y in years if y) / sum(1 for y in years if y) < 2005
    notes = text.count(b"<notes>")
    assert notes / N == pytest.approx(0.5, abs=0.03)
    bodies = [part.split(b"</notes>")[0] for part in text.split(b"<notes>")[1:]]
    assert sum(b"\n" in body for body in bodies) / len(bodies) > 0.75  # 1-6 lines each
    assert 1500 < len(text) / N < 5000  # bytes per release: the real dump's order of size


def test_write_dump_is_atomic_and_gzip_by_suffix(tmp_path):
    dump = write_dump(tmp_path / "d.xml.gz", 50, seed=3)
    assert dump.path.read_bytes()[:2] == b"\x1f\x8b"
    assert [p.name for p in tmp_path.iterdir()] == ["d.xml.gz"]
    with pytest.raises(ValueError, match="cannot generate -1 releases"):
        list(generate_dump_text(-1))


def test_cli_generate_then_ingest(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISCORECS_HOME", str(tmp_path / "home"))
    out = tmp_path / "gen.xml.gz"
    assert main(["generate-dump", "--releases", "120", "--out", str(out), "--seed", "4"]) == 0
    assert main(["ingest-dump", str(out), "--skip-cassandra", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "releases:    120" in printed
    with pytest.raises(SystemExit) as exited:
        main(["generate-dump", "--releases", "0", "--out", str(out)])
    assert exited.value.code == 2
    assert "--releases: 0 must be greater than 0" in capsys.readouterr().err
