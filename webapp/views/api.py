"""The JSON API: the same data as the pages (see README, "JSON API")."""

from flask import Blueprint, abort, jsonify

from webapp import repository
from webapp.models import to_json
from webapp.views.genres import checked_genre, checked_page
from webapp.views.users import checked_user_id

blueprint = Blueprint("api", __name__, url_prefix="/api")


@blueprint.get("/users/<int:user_id>")
def user(user_id: int):
    found = repository().user_page(checked_user_id(user_id))
    if found is None:
        abort(404, f"There is no user {user_id}.")
    return jsonify(to_json(found))


@blueprint.get("/users/<int:user_id>/recommendations")
def recommendations(user_id: int):
    store = repository()
    if store.user(checked_user_id(user_id)) is None:
        abort(404, f"There is no user {user_id}.")
    run_id = store.published_run()
    found = store.recommendations(user_id, run_id) if run_id else None
    if found is None:
        abort(404, f"There are no recommendations for user {user_id} yet; run the batch.")
    return jsonify(to_json(found))


@blueprint.get("/genres/<path:genre>/leaderboard")
def leaderboard(genre: str):
    return jsonify(to_json(repository().leaderboard(checked_genre(genre), checked_page())))


@blueprint.get("/health")
def health():
    return jsonify(to_json(repository().health()))
