"""Generate a Discogs-format releases dump with realistic structure and distributions.

The output has the shape of the real ``discogs_YYYYMMDD_releases.xml.gz``: ``<releases>`` with
one ``<release id=… status=…>`` per release carrying images, artists, title, labels,
extraartists, formats, genres, styles, country, released, notes (with raw newlines),
data_quality, master_id, tracklist, identifiers, videos and companies. About 4 KB of XML per
release, like the real dump. Distributions:

- genres: 1-5 per release (77.5 % one, 16.9 % two, …), weighted as in the real dump (Rock and
  Electronic most common, Brass & Military rarest);
- styles: 0-4 per release from the real ~520-style vocabulary of its genres, Zipf-distributed
  within each genre;
- artists and labels: drawn from seeded pools by Zipf popularity;
- ids: increasing with random gaps (mean gap 2), like the real dump's deleted ids;
- released: 57 % ``YYYY``, 31 % ``YYYY-MM-DD`` (a quarter of them with ``00`` parts), 12 %
  absent; 3 % of releases without a country; ~60 % with a master.

Everything is drawn from one seeded generator and written in batches, so memory is constant
whatever the count and the same seed gives the same bytes.
"""

from __future__ import annotations

import gzip
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from xml.sax.saxutils import escape, quoteattr

from discorecs.catalog import vocabulary as vocab
from discorecs.genres import GENRES

BATCH = 2_000
ARTIST_POOL = 50_000
LABEL_POOL = 10_000


def _zipf_cumulative(n: int, exponent: float = 1.07) -> list[float]:
    """Cumulative Zipf weights over ranks 1..n, for ``random.choices(cum_weights=...)``."""
    return list(itertools.accumulate(1.0 / rank**exponent for rank in range(1, n + 1)))


def _cumulative(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


class _ReleaseWriter:
    """Renders releases as XML text, drawing everything from one seeded generator.

    ``random.Random`` rather than numpy: nearly every draw is a scalar, and numpy's per-call cost
    dominates a scalar draw.
    """

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        rnd = self.rnd
        first, last, words = vocab.FIRST_NAMES, vocab.LAST_NAMES, vocab.WORDS
        shapes = (
            lambda: f"{rnd.choice(first)} {rnd.choice(last)}",
            lambda: f"The {rnd.choice(words)} {rnd.choice(words)}",
            lambda: f"{rnd.choice(words)} {rnd.choice(words)}",
            lambda: f"{rnd.choice(first)} {rnd.choice(last)} & {rnd.choice(words)}",
        )
        self.artists = [escape(rnd.choice(shapes)()) for _ in range(ARTIST_POOL)]
        self.labels = [
            escape(f"{rnd.choice(words)} {rnd.choice(vocab.LABEL_SUFFIXES)}")
            for _ in range(LABEL_POOL)
        ]
        self.words = [escape(word) for word in words]
        self.artist_cum = _zipf_cumulative(ARTIST_POOL)
        self.label_cum = _zipf_cumulative(LABEL_POOL)
        self.artist_ids = range(ARTIST_POOL)
        self.label_ids = range(LABEL_POOL)
        self.genre_cum = _cumulative([vocab.GENRE_WEIGHTS[g] for g in GENRES])
        self.genre_counts = list(vocab.GENRES_PER_RELEASE)
        self.genre_count_cum = _cumulative(list(vocab.GENRES_PER_RELEASE.values()))
        self.styles = {g: [escape(s) for s in vocab.STYLES[g]] for g in GENRES}
        self.style_cum = {g: _zipf_cumulative(len(vocab.STYLES[g]), 0.9) for g in GENRES}
        self.countries = [escape(name) for name, _ in vocab.COUNTRIES]
        self.country_cum = _cumulative([w for _, w in vocab.COUNTRIES])
        self.formats = [(n, [escape(d) for d in ds]) for n, _, ds in vocab.FORMATS]
        self.format_cum = _cumulative([w for _, w, _ in vocab.FORMATS])
        self.qualities = [name for name, _ in vocab.DATA_QUALITY]
        self.quality_cum = _cumulative([w for _, w in vocab.DATA_QUALITY])
        self.escaped_genres = [escape(g) for g in GENRES]
        self.next_id = 1

    def text(self, low: int, high: int) -> str:
        return " ".join(self.rnd.choices(self.words, k=self.rnd.randint(low, high)))

    def release(self) -> str:
        rnd = self.rnd
        release_id = self.next_id
        # Sparse ids: gaps of 1, 2, 3... with halving probability (mean 2), as deletions leave.
        gap = 1
        while rnd.random() < 0.5:
            gap += 1
        self.next_id += gap
        genre_count = rnd.choices(self.genre_counts, cum_weights=self.genre_count_cum)[0]
        genres: list[str] = []
        while len(genres) < genre_count:
            genre = rnd.choices(GENRES, cum_weights=self.genre_cum)[0]
            if genre not in genres:
                genres.append(genre)
        styles: list[str] = []
        for _ in range(rnd.choices((0, 1, 2, 3, 4), (7, 40, 30, 15, 8))[0]):
            genre = rnd.choice(genres)
            style = rnd.choices(self.styles[genre], cum_weights=self.style_cum[genre])[0]
            if style not in styles:
                styles.append(style)
        artist_ids = rnd.choices(self.artist_ids, cum_weights=self.artist_cum, k=2)
        n_artists = 2 if rnd.random() < 0.12 else 1
        artists = "".join(
            f"<artist><id>{a + 1}</id><name>{self.artists[a]}</name><anv/>"
            f"<join>{'&amp;' if n_artists == 2 and k == 0 else ''}</join><role/><tracks/></artist>"
            for k, a in enumerate(artist_ids[:n_artists])
        )
        label_ids = rnd.choices(self.label_ids, cum_weights=self.label_cum, k=2)
        labels = "".join(
            f"<label name={quoteattr(self.labels[lab])} "
            f'catno="{self.labels[lab][:3].upper()} {rnd.randint(1, 9999):03d}" id="{lab + 1}"/>'
            for lab in label_ids[: 2 if rnd.random() < 0.1 else 1]
        )
        format_name, descriptions = rnd.choices(self.formats, cum_weights=self.format_cum)[0]
        chosen = rnd.sample(descriptions, min(len(descriptions), rnd.randint(1, 4)))
        format_xml = (
            f'<formats><format name="{format_name}" qty="{2 if rnd.random() < 0.08 else 1}" '
            'text=""><descriptions>'
            + "".join(f"<description>{d}</description>" for d in chosen)
            + "</descriptions></format></formats>"
        )
        year = min(2026, max(1900, int(rnd.gauss(1995, 17))))
        date_kind = rnd.random()
        if date_kind < 0.57:
            released = f"<released>{year}</released>"
        elif date_kind < 0.80:
            released = (
                f"<released>{year}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}</released>"
            )
        elif date_kind < 0.88:
            released = f"<released>{year}-{rnd.randint(0, 12):02d}-00</released>"
        else:
            released = ""
        country = ""
        if rnd.random() >= 0.03:
            country = (
                f"<country>{rnd.choices(self.countries, cum_weights=self.country_cum)[0]}</country>"
            )
        master = ""
        if rnd.random() < 0.6:
            main = "true" if rnd.random() < 0.6 else "false"
            master = f'<master_id is_main_release="{main}">{release_id // 2 + 7}</master_id>'
        notes = ""
        if rnd.random() < 0.5:
            lines = (self.text(4, 16) for _ in range(rnd.randint(1, 6)))
            notes = "<notes>" + "\n".join(lines) + "</notes>"
        tracks = "".join(
            f"<track><position>{'AB'[t % 2]}{t // 2 + 1}</position><title>{self.text(1, 4)}</title>"
            f"<duration>{rnd.randint(2, 8)}:{rnd.randint(0, 59):02d}</duration></track>"
            for t in range(rnd.randint(2, 16))
        )
        extra = ""
        if rnd.random() < 0.5:
            extra = (
                "<extraartists>"
                + "".join(
                    f"<artist><id>{a + 1}</id><name>{self.artists[a]}</name><anv/><join/>"
                    f"<role>{role}</role><tracks/></artist>"
                    for a, role in zip(
                        rnd.sample(self.artist_ids, 3),
                        ("Producer", "Written-By", "Mastered By"),
                        strict=True,
                    )
                )
                + "</extraartists>"
            )
        videos = ""
        if rnd.random() < 0.3:
            videos = (
                "<videos>"
                + "".join(
                    f'<video src="https://www.youtube.com/watch?v=v{release_id}x{v}" '
                    f'duration="{rnd.randint(120, 500)}" embed="true">'
                    f"<title>{self.text(2, 5)}</title>"
                    f"<description>{self.text(4, 12)}\n{self.text(2, 8)}</description></video>"
                    for v in range(rnd.randint(1, 4))
                )
                + "</videos>"
            )
        identifiers = ""
        if rnd.random() < 0.6:
            identifiers = (
                f'<identifiers><identifier type="Barcode" value="{rnd.randint(10**11, 10**12)}"/>'
                f'<identifier type="Matrix / Runout" description="Side A" value="{release_id}-A1"/>'
                f'<identifier type="Matrix / Runout" description="Side B" value="{release_id}-B1"/>'
                "</identifiers>"
            )
        companies = ""
        if rnd.random() < 0.4:
            companies = (
                "<companies><company><id>1</id><name>Pressing Plant GmbH</name><catno/>"
                "<entity_type>17</entity_type><entity_type_name>Pressed By</entity_type_name>"
                "<resource_url>https://api.discogs.com/labels/1</resource_url></company>"
                "</companies>"
            )
        images = ""
        if rnd.random() < 0.8:
            images = (
                "<images>"
                + (
                    '<image type="primary" uri="" uri150="" width="600" height="600"/>'
                    * rnd.randint(1, 4)
                )
                + "</images>"
            )
        genres_xml = "".join(f"<genre>{escape(g)}</genre>" for g in genres)
        styles_xml = "".join(f"<style>{s}</style>" for s in styles)
        quality = rnd.choices(self.qualities, cum_weights=self.quality_cum)[0]
        return (
            f'<release id="{release_id}" status="Accepted">{images}<artists>{artists}</artists>'
            f"<title>{self.text(1, 4)}</title><labels>{labels}</labels>{extra}{format_xml}"
            f"<genres>{genres_xml}</genres><styles>{styles_xml}</styles>{country}{released}"
            f"{notes}<data_quality>{quality}</data_quality>{master}<tracklist>{tracks}</tracklist>"
            f"{identifiers}{videos}{companies}</release>\n"
        )


def generate_dump_text(releases: int, seed: int = 0) -> Iterator[str]:
    """The dump as a stream of text pieces (header, batches of releases, footer)."""
    if releases < 0:
        raise ValueError(f"cannot generate {releases} releases; give a count of 0 or more")
    writer = _ReleaseWriter(seed)
    yield "<releases>\n"
    remaining = releases
    while remaining > 0:
        size = min(BATCH, remaining)
        yield "".join(writer.release() for _ in range(size))
        remaining -= size
    yield "</releases>\n"


@dataclass(frozen=True)
class GeneratedDump:
    path: Path
    releases: int
    xml_bytes: int


def _open_for_writing(path: Path, gzipped: bool, compresslevel: int) -> BinaryIO:
    if gzipped:
        return gzip.open(path, "wb", compresslevel=compresslevel)
    return path.open("wb")


def write_dump(
    out: Path,
    releases: int,
    seed: int = 0,
    compresslevel: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> GeneratedDump:
    """Write the dump to ``out`` (gzip when it ends in ``.gz``), via a temporary file renamed
    at the end, so an interrupted run never leaves a dump that looks complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    written = 0
    done = 0
    try:
        with _open_for_writing(tmp, out.suffix == ".gz", compresslevel) as handle:
            for piece in generate_dump_text(releases, seed):
                data = piece.encode()
                handle.write(data)
                written += len(data)
                done += piece.count("<release ")
                if progress:
                    progress(done, written)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return GeneratedDump(out, releases, written)
