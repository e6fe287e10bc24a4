"""The JSON API: the same data as the pages (see README, "JSON API")."""

from flask import Blueprint, abort, current_app, jsonify, request

from webapp import repository
from webapp.models import to_json
from webapp.openapi import document
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
    """The batch stored the answer whole (``tables.RECOMMENDATION_FIELDS``), so it is sent as
    read. A published run's answers never change (the run id is part of their key), so each
    worker also keeps the latest ``web_response_cache`` of them: a repeat costs no read, and
    publishing a new run changes every key."""
    store = repository()
    run_id = store.published_run()
    cache = current_app.extensions["response_cache"]
    key = (checked_user_id(user_id), run_id)
    body = cache.get(key) if run_id else None
    cached = body is not None
    if body is None:
        body = store.recommendation_document(user_id, run_id) if run_id else None
        if body is None:  # only then tell an unknown user from one the batch has not seen
            if store.user(user_id) is None:
                abort(404, f"There is no user {user_id}.")
            abort(404, f"There are no recommendations for user {user_id} yet; run the batch.")
        cache.put(key, body)
    response = current_app.response_class(body, mimetype="application/json")
    response.headers["X-Cache"] = "hit" if cached else "miss"
    response.set_etag(f"{run_id}-{user_id}", weak=True)
    return response.make_conditional(request)


@blueprint.get("/genres/<path:genre>/leaderboard")
def leaderboard(genre: str):
    return jsonify(to_json(repository().leaderboard(checked_genre(genre), checked_page())))


@blueprint.get("/openapi.json")
def openapi():
    return jsonify(document())


@blueprint.get("/health")
def health():
    return jsonify(to_json(repository().health()))
