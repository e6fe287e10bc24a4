"""The base of every error a user can act on.

The CLI prints these as one ``discorecs: error:`` paragraph (no traceback); anything else is a
bug and keeps its traceback.
"""


class DiscorecsError(RuntimeError):
    """An error whose message names what failed (file, setting, service, table) and the fix."""
