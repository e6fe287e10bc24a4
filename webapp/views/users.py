from flask import Blueprint, abort, render_template

from webapp import repository
from webapp.charts import genre_bars

blueprint = Blueprint("users", __name__, url_prefix="/users")

MAX_USER_ID = 2**63 - 1


def checked_user_id(user_id: int) -> int:
    if not 0 < user_id <= MAX_USER_ID:
        abort(404, f"There is no user {user_id}.")
    return user_id


@blueprint.get("/<int:user_id>")
def page(user_id: int):
    found = repository().user_page(checked_user_id(user_id))
    if found is None:
        abort(404, f"There is no user {user_id}.")
    chart = genre_bars(found.profile.genres) if found.profile else None
    return render_template("user.html", page=found, chart=chart)
