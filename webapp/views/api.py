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
    """The batch stored the answer whole (``tables.RECOMMENDATION_COLUMNS``); the site merges
    into it what the stream has applied since (``models.merge_views``: a pick the user has
    added or wanted since gives its place to the next one, and ``left_out`` says which; the
    stored text is sent as it is when no shown pick was).
    Both come in one single-partition read (the live state is the partition's static
    columns). A published run's stored answers never change (the run id is part of their
    key), so each worker keeps the latest ``web_response_cache`` of them: a repeat reads only
    the live state, and publishing a new run changes every key."""
    store = repository()
    run_id = store.published_run()
    cache = current_app.extensions["response_cache"]
    key = (checked_user_id(user_id), run_id)
    stored = cache.get(key) if run_id else None
    cached = stored is not None
    if cached:
        live = store.live_view(user_id)
    else:
        stored, live = store.answer_and_live(user_id, run_id) if run_id else (None, None)
        if stored is None:  # only then tell an unknown user from one the batch has not seen
            if store.user(user_id) is None:
                abort(404, f"There is no user {user_id}.")
            abort(404, f"There are no recommendations for user {user_id} yet; run the batch.")
        cache.put(key, stored)
    taken = store.taken(user_id, live, stored.pick_ids)
    body, left_out = stored.served(taken, lambda: store.spare_picks(user_id, run_id))
    response = current_app.response_class(body, mimetype="application/json")
    response.headers["X-Cache"] = "hit" if cached else "miss"
    version = "".join(f"-{release}" for release in left_out)
    response.set_etag(f"{run_id}-{user_id}{version}", weak=True)
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
