"""Generated collectors: profiles, collections and wantlists drawn from the catalog."""

TASTE_MODELS = ("genres", "scenes")
"""How generated collectors choose records: ``genres`` (:mod:`discorecs.users.generate`, by
preferred genres and styles) or ``scenes`` (:mod:`discorecs.users.scenes`, by labels, their
artists and an era)."""
