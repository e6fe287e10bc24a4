from flask import Blueprint, abort, redirect, render_template, request, url_for

from discorecs.genres import GENRES
from webapp import repository
from webapp.views import is_number

blueprint = Blueprint("home", __name__)

MAX_QUERY = 80


@blueprint.get("/")
def index():
    return render_template("home.html", health=repository().health(), genres=GENRES)


@blueprint.get("/search")
def search():
    query = request.args.get("q", "").strip()[:MAX_QUERY]
    if is_number(query):
        return redirect(url_for("users.page", user_id=int(query)))
    if not query:
        abort(400, "Type a user id or the start of a name.")
    return render_template("search.html", query=query, users=repository().search_by_name(query))


@blueprint.get("/random")
def random_user():
    user_id = repository().random_user_id()
    if user_id is None:
        abort(404, "There are no users yet: run `discorecs generate-users`.")
    return redirect(url_for("users.page", user_id=user_id))
