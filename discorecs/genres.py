"""Discogs' 15 top-level genres, spelled exactly as the dump spells them.

Scores, ranks and leaderboards are computed over this list and nothing else: a genre string in
the dump that is not here is a data problem to report, not a 16th genre. The tuple is in name
order, so a genre's position (its bit in the batch's genre bits) is its rank by name.
"""

GENRES: tuple[str, ...] = (
    "Blues",
    "Brass & Military",
    "Children's",
    "Classical",
    "Electronic",
    "Folk, World, & Country",
    "Funk / Soul",
    "Hip Hop",
    "Jazz",
    "Latin",
    "Non-Music",
    "Pop",
    "Reggae",
    "Rock",
    "Stage & Screen",
)

GENRE_INDEX: dict[str, int] = {genre: index for index, genre in enumerate(GENRES)}


GENRE_UNITS = 360_360
"""lcm(1..15): a record with n of the 15 genres adds ``GENRE_UNITS // n`` units to each (an
integer, since GENRE_UNITS is divisible by 1..15). The stream keeps a user's live profile in
these units, so thousands of updates never drift by rounding (see ``streaming.live``)."""


def scores_and_shares(units: dict[str, int]) -> tuple[dict[str, float], dict[str, float]]:
    """The genre scores and shares of a profile kept in genre units (genres with none
    absent): score = units / GENRE_UNITS (a record with n genres counts 1/n towards each, the
    batch layer's formula); share = units / all units."""
    total = sum(units.values())
    return (
        {genre: value / GENRE_UNITS for genre, value in units.items()},
        {genre: value / total for genre, value in units.items()},
    )


def is_genre(name: str) -> bool:
    """Whether ``name`` is one of the 15 genres (exact spelling)."""
    return name in GENRE_INDEX
