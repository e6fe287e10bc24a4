"""The genre profile as a server-rendered SVG bar chart (no script, no external resource)."""

from __future__ import annotations

from dataclasses import dataclass

from webapp.models import GenreStanding

ROW = 26
LABEL = 170
WIDTH = 560
BAR = WIDTH - LABEL - 70


@dataclass(frozen=True)
class Bar:
    genre: str
    share: float
    y: int
    width: int
    label: str


@dataclass(frozen=True)
class BarChart:
    bars: list[Bar]
    width: int
    height: int
    label_width: int


def genre_bars(standings: list[GenreStanding]) -> BarChart:
    """One bar per genre the user collects, longest = largest share (autoescaped in the
    template, so genre names such as "Children's" are safe)."""
    largest = max((s.share for s in standings), default=0.0) or 1.0
    bars = [
        Bar(
            s.genre,
            s.share,
            i * ROW,
            max(2, round(BAR * s.share / largest)),
            f"{s.share * 100:.0f}%",
        )
        for i, s in enumerate(standings)
    ]
    return BarChart(bars, WIDTH, max(ROW, len(bars) * ROW), LABEL)
