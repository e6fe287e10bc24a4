"""Writes that fail for a passing reason (a full connection, a timeout) are run again; others
fail the step at once. The driver's concurrent executor is faked: the decision is ours."""

from types import SimpleNamespace

import pytest
from cassandra import WriteTimeout, WriteType
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionBusy
from cassandra.protocol import InvalidRequest

from discorecs import statements as layer
from discorecs.cassandra import CassandraError, RetryElsewhere
from discorecs.statements import busy

FULL = NoHostAvailable("Unable to complete", {"127.0.0.1": ConnectionBusy("overloaded")})
CONNECTION = SimpleNamespace(session=None)
CHUNK = [("write a", 1), ("write b", 2), ("write c", 3)]


def executor(outcomes):
    """An ``execute_concurrent`` whose n-th call answers ``outcomes[n](parameters)`` for each
    write (True or an error); records the parameters of every call."""
    calls = []

    def execute(session, pending, concurrency, raise_on_first_error):
        outcome = outcomes[len(calls)]
        calls.append([parameters for _, parameters in pending])
        return [(True, None) if outcome(p) is True else (False, outcome(p)) for _, p in pending]

    return execute, calls


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(layer.time, "sleep", lambda seconds: None)


def test_only_the_writes_that_found_the_connection_full_are_run_again(monkeypatch):
    execute, calls = executor([lambda p: True if p == 1 else FULL, lambda p: True])
    monkeypatch.setattr(layer, "execute_concurrent", execute)
    assert layer._execute_chunk(CONNECTION, "collections", CHUNK, 4) == 3
    assert calls == [[1, 2, 3], [2, 3]]


def test_a_write_that_stays_busy_fails_the_step_after_the_retries(monkeypatch):
    execute, calls = executor(
        [lambda p: WriteTimeout("timed out", write_type=WriteType.UNLOGGED_BATCH)]
        * (layer.BUSY_RETRIES + 1)
    )
    monkeypatch.setattr(layer, "execute_concurrent", execute)
    with pytest.raises(CassandraError, match="3 of 3 writes to collections failed"):
        layer._execute_chunk(CONNECTION, "collections", CHUNK, 4)
    assert len(calls) == layer.BUSY_RETRIES + 1


def test_any_other_failure_fails_the_step_at_once(monkeypatch):
    execute, calls = executor([lambda p: FULL if p == 1 else InvalidRequest("no such table")])
    monkeypatch.setattr(layer, "execute_concurrent", execute)
    with pytest.raises(CassandraError, match="no such table"):
        layer._execute_chunk(CONNECTION, "collections", CHUNK, 4)
    assert calls == [[1, 2, 3]]


def test_what_counts_as_busy():
    assert busy(FULL) and busy(WriteTimeout("timed out", write_type=WriteType.UNLOGGED_BATCH))
    assert not busy(NoHostAvailable("down", {"127.0.0.1": ConnectionRefusedError()}))
    assert not busy(NoHostAvailable("no hosts", {}))
    assert not busy(InvalidRequest("no such table"))


def test_a_coordinator_that_cannot_serve_is_left_for_another_twice_at_most():
    from cassandra.policies import RetryPolicy

    policy = RetryElsewhere()
    unavailable = [policy.on_unavailable(None, 6, 2, 1, n)[0] for n in range(4)]
    read_timeout = [policy.on_read_timeout(None, 6, 2, 1, False, n)[0] for n in range(4)]
    expected = [RetryPolicy.RETRY_NEXT_HOST] * 2 + [RetryPolicy.RETHROW] * 2
    assert unavailable == read_timeout == expected
    # A write that timed out is not sent on (the writers' own retries decide).
    assert policy.on_write_timeout(None, 6, WriteType.SIMPLE, 2, 1, 0)[0] == RetryPolicy.RETHROW
