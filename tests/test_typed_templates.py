"""A {{ template }} may stand where the schema wants a number, a boolean or a list: it is checked
again once rendered, with the value it made (the playground offers templates in every field)."""

from __future__ import annotations

import pytest

from pgactions import ActionError, Runtime

from .conftest import TestDB


@pytest.fixture
def numbers(db: TestDB) -> TestDB:
    db.sql("CREATE TABLE n (id int PRIMARY KEY)")
    db.sql("INSERT INTO n SELECT generate_series(1, 10)")
    return db


def test_template_in_an_integer_field(runtime: Runtime, numbers: TestDB) -> None:
    out = runtime.run("find_rows", numbers.profile, {"table": "n", "orderBy": [{"column": "id"}],
                                                     "limit": "{{ trigger.n }}"}, {"trigger": {"n": 3}}).data
    assert [r["id"] for r in out["rows"]] == [1, 2, 3]


def test_template_in_a_boolean_field(runtime: Runtime, numbers: TestDB) -> None:
    out = runtime.run("delete_rows", numbers.profile, {"table": "n", "where": [{"column": "id", "operator": "eq",
                                                                              "value": 1}],
                                                       "dryRun": "{{ trigger.test }}"}, {"trigger": {"test": True}})
    assert out.data["dryRun"] is True and numbers.sql("SELECT count(*) FROM n") == [(10,)]


def test_what_the_template_makes_is_checked(runtime: Runtime, numbers: TestDB) -> None:
    with pytest.raises(ActionError) as caught:
        runtime.run("find_rows", numbers.profile, {"table": "n", "limit": "{{ trigger.n }}"},
                    {"trigger": {"n": "lots"}})
    assert caught.value.code == "INVALID_INPUT" and '"lots" is not of type "integer"' in caught.value.payload["detail"]
    with pytest.raises(ActionError) as caught:
        runtime.run("find_rows", numbers.profile, {"table": "n", "limit": "{{ trigger.n }}"},
                    {"trigger": {"n": "{{ 7 }}"}})  # a value that looks like a template is still a string
    assert caught.value.code == "INVALID_INPUT"


def test_not_a_template_is_refused_at_once(runtime: Runtime, numbers: TestDB) -> None:
    with pytest.raises(ActionError) as caught:
        runtime.run("find_rows", numbers.profile, {"table": "n", "limit": "three"})
    assert caught.value.code == "INVALID_INPUT"


def test_the_timeout_is_never_a_template(runtime: Runtime, numbers: TestDB) -> None:
    with pytest.raises(ActionError) as caught:
        runtime.run("find_rows", numbers.profile, {"table": "n", "timeout": "{{ trigger.t }}"}, {"trigger": {"t": 1}})
    assert caught.value.code == "INVALID_INPUT"
