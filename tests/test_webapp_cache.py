"""The web workers' bounded cache: least recently used out first, entries expire, 0 disables."""

import time

from webapp.cache import BoundedCache


def test_least_recently_used_is_evicted_first():
    cache = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert cache.get_many(["a", "b", "c"]) == ({"a": 1, "c": 3}, ["b"])
    assert len(cache) == 2 and (cache.hits, cache.misses) == (3, 1)


def test_entries_expire_after_ttl():
    cache = BoundedCache(10, ttl=0.05)
    cache.put_many({"a": 1, "b": 2})
    assert cache.get("a") == 1
    time.sleep(0.08)
    assert cache.get_many(["a", "b"]) == ({}, ["a", "b"])


def test_size_zero_keeps_nothing():
    cache = BoundedCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0
