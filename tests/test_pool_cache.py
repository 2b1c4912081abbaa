"""One pool per distinct profile, but not without end: a host given ever new profiles (a
service's callers) keeps at most MAX_POOLS pools, and a pool left empty past its idle time goes."""

from __future__ import annotations

import time

import pytest

from pgactions import Runtime, load_profile
from pgactions.db import connect

from .conftest import TestDB


def _backends(db: TestDB, prefix: str) -> int:
    return int(db.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s", [prefix + "%"])[0][0])


def test_the_least_recently_used_unused_pools_go_past_the_cap(db: TestDB, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connect, "MAX_POOLS", 3)
    with Runtime() as runtime:
        profiles = [{**db.profile, "applicationName": f"capped-{n}"} for n in range(6)]
        for profile in profiles:
            assert runtime.run("query_rows", profile, {"query": "SELECT 1 AS one"}).data["rows"] == [{"one": 1}]
        kept = {profile.applicationName for profile in runtime.pools._pools}
        assert kept == {"capped-3", "capped-4", "capped-5"}
        assert _backends(db, "capped-") == 3  # the dropped pools' idle connections were closed
        # A dropped profile comes back as a new pool (and pushes out the least recently used).
        assert runtime.run("query_rows", profiles[0], {"query": "SELECT 2 AS two"}).data["rows"] == [{"two": 2}]
        assert {p.applicationName for p in runtime.pools._pools} == {"capped-0", "capped-4", "capped-5"}


def test_a_pool_in_use_is_never_dropped(db: TestDB, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connect, "MAX_POOLS", 1)
    with Runtime() as runtime:
        busy = load_profile({**db.profile, "applicationName": "in-use"})
        pool, conn = runtime.pools.checkout(busy)
        runtime.run("query_rows", {**db.profile, "applicationName": "other"}, {"query": "SELECT 1"})
        assert busy in runtime.pools._pools  # over the cap for a while rather than taking it away
        pool.put(conn)


def test_a_caller_holding_a_dropped_pool_gets_its_successor(db: TestDB) -> None:
    with Runtime() as runtime:
        profile = load_profile({**db.profile, "applicationName": "dropped"})
        runtime.run("query_rows", profile, {"query": "SELECT 1"})
        old = runtime.pools.pool(profile)
        with runtime.pools._lock:
            runtime.pools._drop(profile)  # as eviction or the reaper does, between pool() and get()
        assert old.size == 0
        runtime.pools._last = (profile, old)  # as a pool() racing with the drop may leave it
        for _ in range(2):
            pool, conn = runtime.pools.checkout(profile)
            assert pool is not old and pool is runtime.pools.pool(profile)
            pool.put(conn)


def test_an_empty_pool_goes_after_its_idle_time(db: TestDB) -> None:
    with Runtime() as runtime:
        profile = load_profile({**db.profile, "applicationName": "short-lived", "idleTimeout": 1})
        runtime.run("query_rows", profile, {"query": "SELECT 1"})
        assert profile in runtime.pools._pools and _backends(db, "short-lived") == 1
        deadline = time.monotonic() + 15
        while profile in runtime.pools._pools and time.monotonic() < deadline:
            time.sleep(0.1)
        assert profile not in runtime.pools._pools
        assert _backends(db, "short-lived") == 0
