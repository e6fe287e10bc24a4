"""The site's repository against the real Cassandra (seeded rows), and its recovery."""

import json

import pytest

from discorecs import tables
from discorecs.cassandra import connect
from discorecs.tables import (
    LATEST_CHANGES,
    LIVE_PROFILE_FIELDS,
    encode_document,
    packed_release_ids,
)
from tests.serving_fixtures import (
    FRIENDS,
    LIVE_DOCUMENT,
    OLD_RUN,
    RUN,
    WHEN,
    recommendation_document,
    seed_serving,
)
from webapp.repository import CassandraRepository, ServingUnavailable

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def repo(services):
    seed_serving(services)
    repository = CassandraRepository(services)
    yield repository
    repository.close()


def test_user_page_reads_the_published_run(repo):
    page = repo.user_page(7001)
    assert page.user.name == "Ada Lovelace"
    assert page.live_collection_size == 1
    assert page.profile.genres[0].genre == "Jazz" and page.profile.genres[0].rank == 2
    recs = page.recommendations
    assert recs.run_id == RUN != OLD_RUN
    assert recs.friend.user.name == "Charles Babbage" and recs.friend.match == 0.91
    assert [f.user.name for f in recs.other_friends] == ["Grace Hopper"]
    assert recs.releases[0].release.title == "Head Hunters"
    assert recs.releases[0].release.genres == ["Jazz", "Funk / Soul"]
    assert [(c.event_time, c.kind, c.release.title) for c in page.changes] == [
        (WHEN.replace(tzinfo=None), "collection_add", "Kind of Blue")
    ]
    assert page.profile.live_at is not None  # the seeded live row


def test_unknown_user_is_none(repo):
    assert repo.user_page(123456789) is None


def test_search_random_leaderboard_health(repo):
    assert [u.user_id for u in repo.search_by_name("Ada")] == [7001]
    assert repo.search_by_name("a") == []
    assert repo.random_user_id() is not None
    first = repo.leaderboard("Jazz", page=1, page_size=2)
    assert [e.rank for e in first.entries] == [1, 2] and first.has_next
    last = repo.leaderboard("Jazz", page=3, page_size=2)
    assert [e.rank for e in last.entries] == [5] and not last.has_next
    health = repo.health()
    assert health.published_run == RUN and health.last_runs[0].status == "succeeded"


def test_cassandra_down_raises_unavailable(test_settings):
    from tests.conftest import free_port

    nowhere = test_settings.replace(cassandra_port=free_port())
    with pytest.raises(ServingUnavailable):
        CassandraRepository(nowhere).user(1)


def test_the_streams_live_scores_replace_the_batch_scores_but_keep_its_ranks(repo, services):
    from datetime import UTC, datetime

    from discorecs.cassandra import connect
    from discorecs.tables import LIVE_PROFILE_FIELDS, encode_document

    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        document = encode_document(
            LIVE_PROFILE_FIELDS,
            {
                "collection_size": 2,
                "genre_units": {"Jazz": 360360, "Rock": 360360},
                "latest_changes": [],
            },
        )
        connection.session.execute(
            "INSERT INTO recommendations_by_user (user_id, profile, updated_at) "
            "VALUES (%s, %s, %s)",
            (7001, document, datetime.now(UTC)),
        )
        try:
            page = repo.user_page(7001)
        finally:  # the seeded live row back
            connection.session.execute(
                "INSERT INTO recommendations_by_user (user_id, profile, updated_at) "
                "VALUES (%s, %s, %s)",
                (7001, LIVE_DOCUMENT, WHEN),
            )
    assert page.changes == []
    assert page.live_collection_size == 2 and page.profile.live_at is not None
    standings = {s.genre: s for s in page.profile.genres}
    assert (standings["Jazz"].score, standings["Jazz"].rank) == (1.0, 2)  # rank of the run
    assert (standings["Rock"].share, standings["Rock"].rank) == (0.5, None)
    assert page.profile.run_id == RUN


def test_picks_held_or_wanted_since_the_run_are_left_out(repo, services):
    """User 7009's live row lists a full set of changes (older ones may have dropped off),
    so the repository reads the wantlist for the picks; the collection comes from the
    row's holdings."""
    changes = [[WHEN, f"c-{i}", "collection_add", 5000 + i] for i in range(LATEST_CHANGES)]
    document = encode_document(
        LIVE_PROFILE_FIELDS, {"collection_size": 11, "genre_units": {}, "latest_changes": changes}
    )
    held = packed_release_ids(sorted([9101, *range(5000, 5010)]))
    stored = json.loads(recommendation_document(RUN, FRIENDS[RUN]))
    head_hunters = stored["releases"][0]
    kind_of_blue = {**head_hunters, "release": {**head_hunters["release"], "release_id": 9101}}
    other = {**head_hunters, "release": {**head_hunters["release"], "release_id": 9103}}
    stored["releases"] = [kind_of_blue, head_hunters]  # shown; "other" is a spare
    picks = [9101, 9102, 9103]
    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        session = connection.session
        session.execute(
            f"INSERT INTO {tables.RECOMMENDATIONS} (user_id, profile, holdings) "
            "VALUES (7009, %s, %s)",
            (document, held),
        )
        session.execute(f"INSERT INTO {tables.WANTLISTS} (user_id, release_id) VALUES (7009, 9102)")
        session.execute(
            f"INSERT INTO {tables.RECOMMENDATIONS} (user_id, run_id, recommendation, "
            "spare_picks, pick_ids) VALUES (7009, %s, %s, %s, %s)",
            (RUN, json.dumps(stored), json.dumps([other]), packed_release_ids(picks)),
        )
    recs = repo.recommendations(7009, RUN)
    assert [pick.release.release_id for pick in recs.releases] == [9103]  # a spare
    assert recs.left_out == [9101, 9102]
    assert repo.taken(7009, repo.live_view(7009), picks) == {9101, 9102}
    held = repo.taken(7001, repo.live_view(7001), picks)
    assert held == {9101}  # held; a short list: no wantlist read


def test_an_answer_stored_by_an_earlier_release_is_served_in_the_current_form(repo, services):
    """Rows written before spare_picks and pick_ids existed: no spares, the ids read from the
    answer, and left_out added."""
    old = json.loads(recommendation_document(RUN, FRIENDS[RUN]))
    del old["left_out"]
    with connect(services, keyspace=services.cassandra_keyspace) as connection:
        connection.session.execute(
            f"INSERT INTO {tables.RECOMMENDATIONS} (user_id, run_id, recommendation) "
            "VALUES (7010, %s, %s)",
            (RUN, json.dumps(old)),
        )
    stored, live = repo.answer_and_live(7010, RUN)
    assert live is None
    assert stored.pick_ids == (9102,)
    assert json.loads(stored.document) == {**old, "left_out": []}


class _StallingSession:
    """A session whose first ``stalls`` executions time out on the client."""

    def __init__(self, stalls: int) -> None:
        self.stalls, self.calls = stalls, 0

    def execute(self, statement, params):
        from cassandra import OperationTimedOut

        self.calls += 1
        if self.calls <= self.stalls:
            raise OperationTimedOut("Client request timeout")
        return [("row", params)]


def _repository_over(session, settings):
    from types import SimpleNamespace

    repository = CassandraRepository(settings)
    repository._connection = SimpleNamespace(session=session)
    repository._prepared = {"user": "SELECT ..."}
    return repository


def test_a_read_that_timed_out_is_asked_once_more(test_settings):
    session = _StallingSession(stalls=1)
    assert _repository_over(session, test_settings)._run("user", [7]) == [("row", (7,))]
    assert session.calls == 2


def test_a_read_that_times_out_twice_is_unavailable(test_settings):
    session = _StallingSession(stalls=2)
    with pytest.raises(ServingUnavailable, match="Client request timeout"):
        _repository_over(session, test_settings)._run("user", [7])
    assert session.calls == 2
