"""Discogs' 15 top-level genres, spelled exactly as the dump spells them.

Scores, ranks and leaderboards are computed over this list and nothing else: a genre string in
the dump that is not here is a data problem to report, not a 16th genre.
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


def is_genre(name: str) -> bool:
    """Whether ``name`` is one of the 15 genres (exact spelling)."""
    return name in GENRE_INDEX
