from flask import Blueprint, abort, render_template, request

from discorecs.genres import GENRES, is_genre
from webapp import repository
from webapp.views import is_number

blueprint = Blueprint("genres", __name__, url_prefix="/genres")

MAX_PAGE = 10_000


def checked_genre(genre: str) -> str:
    if not is_genre(genre):
        abort(404, f"There is no genre {genre!r}; genres are: {', '.join(GENRES)}.")
    return genre


def checked_page() -> int:
    raw = request.args.get("page", "1")
    if not is_number(raw) or not 1 <= int(raw) <= MAX_PAGE:
        abort(400, f"page must be a number from 1 to {MAX_PAGE}.")
    return int(raw)


@blueprint.get("/<path:genre>")
def leaderboard(genre: str):
    board = repository().leaderboard(checked_genre(genre), checked_page())
    return render_template("leaderboard.html", board=board, genres=GENRES)
