"""One blueprint per area of the site. Views hold no CQL: they call the repository."""


def is_number(text: str) -> bool:
    """Whether ``text`` is a whole number in ASCII digits (``str.isdigit`` also takes "²",
    which ``int`` refuses)."""
    return text.isascii() and text.isdigit()
