"""Views and API with the Flask test client over a fake repository (no Cassandra)."""

import inspect
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from webapp import create_app
from webapp.models import (
    BatchRun,
    CollectionChange,
    FriendPick,
    GenreStanding,
    Health,
    Leaderboard,
    LeaderboardEntry,
    Profile,
    Recommendations,
    Release,
    ReleasePick,
    Repository,
    StoredAnswer,
    StreamHealth,
    User,
    UserPage,
    merge_views,
    to_json,
)
from webapp.repository import CassandraRepository, ServingUnavailable, wanted_by_changes

WHEN = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
KIND_OF_BLUE = Release(
    2, "Kind of Blue", ["Miles Davis"], 1959, ["Jazz"], ["Modal"], "US", ["Vinyl"]
)
BLUE_TRAIN = Release(3, "Blue Train", ["John Coltrane"], 1958, ["Jazz"], ["Hard Bop"])
A_LOVE_SUPREME = Release(4, "A Love Supreme", ["John Coltrane"], 1965, ["Jazz"], ["Free Jazz"])


class FakeRepository:
    def __init__(self) -> None:
        self.down = False
        self.run = "20261125T030000Z-abcdef"
        self.recommendation_reads = 0
        self.taken_: dict[int, set[int]] = {}  # per user: picks added or wanted since the run
        self.users_ = {
            7: User(7, "Ada <b>Lovelace</b>", "London, UK", WHEN),
            8: User(8, "Charles Babbage", "London, UK", WHEN),
        }

    def _check(self) -> None:
        if self.down:
            raise ServingUnavailable("Cassandra is restarting")

    def user(self, user_id):
        self._check()
        return self.users_.get(user_id)

    def published_run(self):
        self._check()
        return self.run

    def answer_and_live(self, user_id, run_id):
        """As the batch stores it: two picks shown (the fake's own count) and one spare; the
        live state is what ``taken`` says was taken."""
        self._check()
        self.recommendation_reads += 1
        found = self.recommendations(user_id, run_id)
        if not found:
            return None, None
        document = json.dumps(to_json(replace(found, left_out=[])))
        return StoredAnswer(document, (2, 3, A_LOVE_SUPREME.release_id)), user_id

    def spare_picks(self, user_id, run_id):
        return json.dumps([to_json(ReleasePick(A_LOVE_SUPREME, 0.05, "Hard Bop"))])

    def live_view(self, user_id):
        self._check()
        return user_id

    def taken(self, user_id, live, pick_ids):
        return self.taken_.get(live, set()) & set(pick_ids)

    def recommendations(self, user_id, run_id):
        self._check()
        if user_id not in self.users_:
            return None
        friend = FriendPick(
            self.users_[8 if user_id == 7 else 7],
            0.91,
            ["Jazz", "Funk / Soul"],
            "you both collect Jazz and Funk / Soul, 91% taste match",
        )
        return Recommendations(
            run_id,
            WHEN,
            friend,
            [],
            [
                ReleasePick(KIND_OF_BLUE, 0.2, "popular among Modal collectors"),
                ReleasePick(BLUE_TRAIN, 0.1, "popular among Hard Bop collectors"),
            ],
            left_out=sorted(self.taken_.get(user_id, set())),
        )

    def user_page(self, user_id):
        self._check()
        user = self.users_.get(user_id)
        if user is None:
            return None
        profile = Profile(
            "20261125T030000Z-abcdef",
            12,
            [
                GenreStanding("Jazz", 8.0, 0.6667, 3, 99.5),
                GenreStanding("Children's", 4.0, 0.3333, 40, 80.0),
            ],
            ["Modal"],
            live_at=WHEN if user_id == 8 else None,
        )
        return UserPage(
            user,
            profile,
            13,
            self.recommendations(user_id, self.published_run()),
            [CollectionChange(WHEN, "collection_add", KIND_OF_BLUE)],
        )

    def leaderboard(self, genre, page=1, page_size=50):
        self._check()
        entries = [
            LeaderboardEntry(r, 100 + r, f"Collector {r}", 50.0 - r, 99.0 - r)
            for r in range((page - 1) * 2 + 1, page * 2 + 1)
        ]
        return Leaderboard(genre, "r", page, 2, entries, page < 3)

    def health(self):
        self._check()
        return Health(
            "r",
            [BatchRun("r", "succeeded", WHEN, WHEN, {"users_with_friend": 2})],
            StreamHealth(20, 1234.5, 17, WHEN, 3),
        )

    def search_by_name(self, prefix, limit=20):
        self._check()
        return [u for u in self.users_.values() if u.name.lower().startswith(prefix.lower())]

    def random_user_id(self):
        self._check()
        return 7


@pytest.fixture
def fake():
    return FakeRepository()


@pytest.mark.parametrize("implementation", [CassandraRepository, FakeRepository])
def test_the_fake_and_the_real_repository_take_what_the_views_pass(implementation):
    """The views call Repository's methods; a method missing or taking other parameters in
    either implementation would make these tests pass over a fake the real one is not."""
    for name, declared in inspect.getmembers(Repository, inspect.isfunction):
        if name.startswith("_"):
            continue
        method = getattr(implementation, name, None)
        assert method is not None, f"{implementation.__name__} has no {name}"
        wanted = list(inspect.signature(declared).parameters)
        assert list(inspect.signature(method).parameters) == wanted, name


def test_an_object_that_is_not_a_repository_is_refused():
    with pytest.raises(TypeError, match="does not serve every read"):
        create_app({"TESTING": True}, repository=object())


@pytest.fixture
def client(fake):
    return create_app({"TESTING": True}, repository=fake).test_client()


def test_user_page_shows_profile_friend_release_and_chart(client):
    page = client.get("/users/7")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Ada &lt;b&gt;Lovelace&lt;/b&gt;" in html  # autoescaped
    assert 'id="genre-chart"' in html and "<rect" in html and "Children&#39;s" in html
    assert 'href="/users/8"' in html and "91% taste match" in html
    assert "Kind of Blue" in html and "https://www.discogs.com/release/2" in html
    assert "popular among Modal collectors" in html
    assert "20261125T030000Z-abcdef" in html and "2026-11-25 03:00 UTC" in html
    assert "collection add" in html
    assert 'id="live-note"' not in html  # no live scores for this user


def test_user_page_says_when_scores_are_the_streams(client):
    html = client.get("/users/8").get_data(as_text=True)
    assert 'id="live-note"' in html and "as of 2026-11-25 03:00:00 UTC" in html


def test_security_headers(client):
    response = client.get("/users/7")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_unknown_user_and_genre_are_404_pages_not_traces(client):
    for path in ("/users/999", "/genres/Polka%20Rock", "/users/0"):
        response = client.get(path)
        assert response.status_code == 404
        assert "Traceback" not in response.get_data(as_text=True)
    assert client.get("/users/abc").status_code == 404


def test_api_errors_are_json(client):
    response = client.get("/api/users/999")
    assert response.status_code == 404
    assert response.get_json() == {"error": {"status": 404, "message": "There is no user 999."}}
    bad_page = client.get("/api/genres/Jazz/leaderboard?page=-1")
    assert bad_page.status_code == 400 and bad_page.get_json()["error"]["status"] == 400
    assert client.get("/api/genres/Techno/leaderboard").status_code == 404


def test_digits_that_are_not_ascii_are_a_400_or_a_search_not_a_500(client):
    for path in ("/genres/Jazz?page=%C2%B2", "/api/genres/Jazz/leaderboard?page=%C2%B2"):
        response = client.get(path)  # "²" is a digit to str.isdigit, not to int()
        assert response.status_code == 400, path
    search = client.get("/search?q=%C2%B2")  # a name search, not a user id
    assert search.status_code == 200
    assert "Nobody's name starts with" in search.get_data(as_text=True)


def test_a_wrong_method_is_a_405_that_says_which_are_allowed(client):
    for path in ("/api/users/7", "/users/7"):
        response = client.post(path)
        assert response.status_code == 405
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert client.delete("/api/health").get_json()["error"]["status"] == 405


def test_api_user_and_recommendations(client):
    user = client.get("/api/users/7").get_json()
    assert user["user"]["name"] == "Ada <b>Lovelace</b>"
    assert user["profile"]["genres"][0] == {
        "genre": "Jazz",
        "score": 8.0,
        "share": 0.6667,
        "rank": 3,
        "percentile": 99.5,
    }
    recs = client.get("/api/users/7/recommendations").get_json()
    assert recs["friend"]["user"]["user_id"] == 8
    assert recs["releases"][0]["release"]["title"] == "Kind of Blue"
    assert recs["generated_at"] == "2026-11-25T03:00:00.000000+00:00"


def test_api_recommendations_cached_per_published_run(fake):
    client = create_app({"TESTING": True, "RESPONSE_CACHE_SIZE": 10}, repository=fake).test_client()
    first = client.get("/api/users/7/recommendations")
    again = client.get("/api/users/7/recommendations")
    assert (first.headers["X-Cache"], again.headers["X-Cache"]) == ("miss", "hit")
    assert again.get_json() == first.get_json() and fake.recommendation_reads == 1
    etag = first.headers["ETag"]
    assert etag == 'W/"20261125T030000Z-abcdef-7"'
    unchanged = client.get("/api/users/7/recommendations", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.get_data() == b""
    fake.run = "20261126T030000Z-012345"  # a new run is published: a new answer
    fresh = client.get("/api/users/7/recommendations", headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["X-Cache"] == "miss"
    assert fresh.get_json()["run_id"] == "20261126T030000Z-012345"
    assert fake.recommendation_reads == 2
    assert client.get("/api/users/999/recommendations").status_code == 404  # not cached


def pick(release_id):
    return {"release": {"release_id": release_id}, "score": 1 / release_id, "reason": ""}


def pick_ids(answer):
    return [pick["release"]["release_id"] for pick in answer["releases"]]


def test_merging_views_skips_picks_taken_since_the_run_and_shows_the_next():
    answer = {"run_id": "r", "releases": [pick(r) for r in range(1, 11)], "left_out": []}
    spares = [pick(r) for r in range(11, 16)]
    merged = merge_views(answer, spares, {2, 12, 99}, shown=10)
    assert pick_ids(merged) == [1, *range(3, 12)]
    assert merged["left_out"] == [2]  # 12 would not have been shown anyway
    assert merged["run_id"] == "r" and pick_ids(answer) == list(range(1, 11))  # unchanged
    assert merge_views(answer, spares, set(), shown=10) == answer
    assert pick_ids(merge_views(answer, spares, set(range(1, 14)), shown=10)) == [14, 15]


def test_a_stored_answer_is_sent_as_stored_unless_a_shown_pick_was_taken():
    answer = {"run_id": "r", "releases": [pick(r) for r in range(1, 11)], "left_out": []}
    stored = StoredAnswer(json.dumps(answer), tuple(range(1, 12)))

    def spares_unread():
        raise AssertionError("the spares are read only when a shown pick was taken")

    assert stored.served(set(), spares_unread) == (stored.document, [])
    assert stored.served({11, 99}, spares_unread) == (stored.document, [])  # only a spare
    body, left_out = stored.served({4}, lambda: json.dumps([pick(11)]))
    assert left_out == [4] and json.loads(body)["left_out"] == [4]
    assert pick_ids(json.loads(body)) == [1, 2, 3, *range(5, 12)]


def test_the_api_leaves_out_a_pick_added_since_the_run(client, fake):
    before = client.get("/api/users/7/recommendations")
    fake.taken_[7] = {2}  # the stream applied user 7's add of Kind of Blue
    after = client.get("/api/users/7/recommendations")
    assert pick_ids(before.get_json()) == [2, 3]
    assert pick_ids(after.get_json()) == [3, 4]  # the spare took its place
    assert (before.get_json()["left_out"], after.get_json()["left_out"]) == ([], [2])
    assert before.headers["ETag"] != after.headers["ETag"]  # the answer changed
    page = client.get("/users/7").get_data(as_text=True)
    assert "Adjusted since the nightly run: 1 pick you have added or wanted" in page


def test_api_recommendations_without_cache_always_read(client, fake):
    for _ in range(3):
        assert client.get("/api/users/7/recommendations").headers["X-Cache"] == "miss"
    assert fake.recommendation_reads == 3


def test_leaderboard_pages(client):
    html = client.get("/genres/Jazz?page=2").get_data(as_text=True)
    assert "Collector 3" in html and "Collector 4" in html and "page=3" in html
    assert "Brass &amp; Military" in html
    api = client.get("/api/genres/Folk,%20World,%20%26%20Country/leaderboard").get_json()
    assert api["genre"] == "Folk, World, & Country" and api["entries"][0]["rank"] == 1


def test_home_search_and_random(client):
    home = client.get("/").get_data(as_text=True)
    assert "succeeded" in home and "1,234 events/s" in home
    assert client.get("/search?q=7").headers["Location"].endswith("/users/7")
    assert "Charles Babbage" in client.get("/search?q=char").get_data(as_text=True)
    assert client.get("/search?q=").status_code == 400
    assert client.get("/random").headers["Location"].endswith("/users/7")
    assert client.get("/api/health").get_json()["stream"]["events_per_second"] == 1234.5


def test_cassandra_down_is_a_friendly_503_that_recovers(client, fake):
    fake.down = True
    page = client.get("/users/7")
    assert page.status_code == 503 and page.headers["Retry-After"] == "5"
    assert "Back in a moment" in page.get_data(as_text=True)
    assert client.get("/api/health").get_json()["error"]["status"] == 503
    fake.down = False
    assert client.get("/users/7").status_code == 200


def _conforms(value, schema, components, where="$"):
    """The subset of JSON Schema the API document uses; raises with the path on a mismatch."""
    if "$ref" in schema:
        return _conforms(value, components[schema["$ref"].rsplit("/", 1)[1]], components, where)
    if "oneOf" in schema:
        for option in schema["oneOf"]:
            try:
                return _conforms(value, option, components, where)
            except AssertionError:
                continue
        raise AssertionError(f"{where}: {value!r} matches none of {schema['oneOf']}")
    kind = schema["type"]
    python = {"integer": int, "number": (int, float), "string": str, "boolean": bool}
    python |= {"array": list, "object": dict, "null": type(None)}
    assert isinstance(value, python[kind]), f"{where}: {value!r} is not {kind}"
    if kind == "array":
        for i, item in enumerate(value):
            _conforms(item, schema["items"], components, f"{where}[{i}]")
    if kind == "object":
        assert set(schema.get("required", [])) <= set(value), f"{where}: missing fields"
        for key, item in value.items():
            inner = schema.get("properties", {}).get(key, schema.get("additionalProperties"))
            assert inner is not None, f"{where}: undocumented field {key!r}"
            _conforms(item, inner, components, f"{where}.{key}")


def test_openapi_document_describes_every_route_and_real_answers(client):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    app = client.application
    routes = {
        rule.rule.replace("<int:", "{").replace("<path:", "{").replace(">", "}")
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
    }
    assert routes == set(doc["paths"])
    components = doc["components"]["schemas"]
    for url, path in (
        ("/api/users/7", "/api/users/{user_id}"),
        ("/api/users/7/recommendations", "/api/users/{user_id}/recommendations"),
        ("/api/genres/Jazz/leaderboard", "/api/genres/{genre}/leaderboard"),
        ("/api/health", "/api/health"),
    ):
        schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        _conforms(client.get(url).get_json(), schema["schema"], components)
    missing = client.get("/api/users/999").get_json()
    _conforms(missing, {"$ref": "#/components/schemas/Error"}, components)
    with pytest.raises(AssertionError, match="undocumented field"):  # the checker can fail
        _conforms({"surprise": 1}, {"$ref": "#/components/schemas/Error"}, components)


def test_the_latest_wantlist_change_of_a_release_decides_whether_it_is_wanted():
    changes = [  # newest first, as a live row lists them
        {"kind": "wantlist_remove", "release_id": 5},
        {"kind": "wantlist_add", "release_id": 5},
        {"kind": "wantlist_add", "release_id": 6},
        {"kind": "collection_add", "release_id": 7},
        {"kind": "wantlist_remove", "release_id": 6},
    ]
    assert wanted_by_changes(changes) == {6}
