"""Batching modes (independent, transaction, single) and Run Transaction, with rollbacks checked
by reading the tables afterwards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pgactions import ActionError, Runtime

pytestmark = pytest.mark.pooler_modes


def _user_items(*emails: str) -> list[dict]:
    return [{"inputs": {"table": "users", "columns": {"name": "{{ trigger.name }}", "email": "{{ trigger.email }}"}},
             "context": {"trigger": {"name": f"user {i}", "email": email}}} for i, email in enumerate(emails)]


def _emails(db) -> list[str]:
    return [r[0] for r in db.sql("SELECT email FROM users ORDER BY id")]


def test_independent_mode_runs_every_item(runtime: Runtime, guide_db) -> None:
    items = _user_items("a@x.com", "john@example.com", "b@x.com")  # the second exists already
    out = runtime.run_batch("insert_row", guide_db.profile, items, "independent").data
    assert (out["mode"], out["ok"], out["succeeded"], out["failed"]) == ("independent", False, 2, 1)
    assert [r["ok"] for r in out["items"]] == [True, False, True]
    assert out["items"][1]["error"]["code"] == "UNIQUE_VIOLATION"
    assert out["items"][2]["output"]["row"]["email"] == "b@x.com"
    assert _emails(guide_db)[2:] == ["a@x.com", "b@x.com"]


def test_transaction_mode_is_all_or_nothing(runtime: Runtime, guide_db) -> None:
    items = _user_items("a@x.com", "b@x.com", "john@example.com", "c@x.com")
    with pytest.raises(ActionError) as info:
        runtime.run_batch("insert_row", guide_db.profile, items, "transaction")
    error = info.value.payload
    assert error["code"] == "UNIQUE_VIOLATION" and error["itemIndex"] == 2 and error["rolledBack"] is True
    assert error["detail"].startswith("item 2:")
    assert _emails(guide_db) == ["john@example.com", "mary@example.com"]  # a@ and b@ were rolled back
    out = runtime.run_batch("insert_row", guide_db.profile, _user_items("a@x.com", "b@x.com"), "transaction").data
    ids = [r["output"]["insertedId"] for r in out["items"]]
    assert out["ok"] is True and [r[0] for r in guide_db.sql("SELECT id FROM users WHERE id > 2 ORDER BY id")] == ids


def test_transaction_mode_names_an_invalid_item(runtime: Runtime, guide_db) -> None:
    items = _user_items("a@x.com") + [{"inputs": {"table": "users"}}]
    with pytest.raises(ActionError) as info:
        runtime.run_batch("insert_row", guide_db.profile, items, "transaction")
    assert info.value.code == "INVALID_INPUT" and info.value.payload["itemIndex"] == 1
    assert "items/1/inputs" in json.dumps(info.value.payload["errors"])
    assert len(_emails(guide_db)) == 2


def test_single_mode_is_one_bulk_statement(runtime: Runtime, guide_db) -> None:
    out = runtime.run_batch("insert_row", guide_db.profile, _user_items("a@x.com", "b@x.com", "c@x.com"), "single").data
    assert out == {"mode": "single", "ok": True, "output": {"rowCount": 3}}
    with pytest.raises(ActionError) as info:
        runtime.run_batch("insert_row", guide_db.profile, _user_items("d@x.com", "a@x.com"), "single")
    assert info.value.code == "UNIQUE_VIOLATION" and info.value.payload["rowIndex"] == 1
    assert len(_emails(guide_db)) == 5
    upserts = [{"inputs": {"table": "users", "columns": {"email": e, "name": n}, "conflictColumns": ["email"]}}
               for e, n in (("a@x.com", "A"), ("z@x.com", "Z"))]
    out = runtime.run_batch("upsert_row", guide_db.profile, upserts, "single").data["output"]
    assert (out["inserted"], out["updated"]) == (1, 1)


def test_single_mode_runs_one_prepared_query_for_sql_actions(runtime: Runtime, guide_db) -> None:
    items = [{"inputs": {"query": "UPDATE users SET status = $1 WHERE email = $2", "parameters": [s, e]}}
             for s, e in (("a", "john@example.com"), ("b", "mary@example.com"), ("c", "nobody@example.com"))]
    out = runtime.run_batch("update_rows", guide_db.profile, items, "single").data
    assert [r["output"]["rowCount"] for r in out["items"]] == [1, 1, 0]
    reads = [{"inputs": {"query": "SELECT name FROM users WHERE id = $1", "parameters": [i]}} for i in (2, 1)]
    out = runtime.run_batch("query_rows", guide_db.profile, reads, "single").data
    assert [r["output"]["rows"] for r in out["items"]] == [[{"name": "Mary Major"}], [{"name": "John Doe"}]]
    mixed = reads + [{"inputs": {"query": "SELECT 2"}}]
    with pytest.raises(ActionError) as info:
        runtime.run_batch("query_rows", guide_db.profile, mixed, "single")
    assert info.value.code == "INVALID_INPUT" and info.value.payload["itemIndex"] == 2


def test_single_mode_failure_rolls_back_every_item(runtime: Runtime, guide_db) -> None:
    items = [{"inputs": {"query": "UPDATE orders SET total = $1 WHERE id = $2", "parameters": [t, 1]}}
             for t in ("5", "-1")]
    guide_db.sql("INSERT INTO orders (user_id, total) VALUES (1, 10)")
    with pytest.raises(ActionError) as info:
        runtime.run_batch("update_rows", guide_db.profile, items, "single")
    assert info.value.code == "CHECK_VIOLATION"
    assert guide_db.sql("SELECT total::text FROM orders") == [("10.00",)]


def test_run_transaction_templates_on_earlier_steps(runtime: Runtime, guide_db) -> None:
    out = runtime.run("run_transaction", guide_db.profile, {"steps": [
        {"id": "insert_order", "action": "insert_row",
         "inputs": {"table": "orders", "columns": {"user_id": "{{ trigger.user }}", "total": "19.90"}}},
        {"id": "note", "action": "insert_row",
         "inputs": {"table": "logs", "columns": {"level": "info",
                                                  "message": "order {{ steps.insert_order.insertedId }} created"}}},
        {"id": "check", "action": "query_rows",
         "inputs": {"query": "SELECT count(*) AS n FROM orders WHERE id = $1",
                    "parameters": ["{{ steps.insert_order.insertedId }}"]}},
    ]}, {"trigger": {"user": 1}}).data
    assert out["committed"] is True and [s["id"] for s in out["steps"]] == ["insert_order", "note", "check"]
    order_id = out["steps"][0]["output"]["insertedId"]
    assert out["steps"][2]["output"]["rows"] == [{"n": 1}]  # later steps see earlier writes
    assert guide_db.sql("SELECT message FROM logs") == [(f"order {order_id} created",)]


def test_run_transaction_rolls_back_and_names_the_step(runtime: Runtime, guide_db) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("run_transaction", guide_db.profile, {"steps": [
            {"id": "order", "action": "insert_row", "inputs": {"table": "orders", "columns": {"user_id": 1, "total": 5}}},
            {"id": "bad", "action": "insert_row", "inputs": {"table": "orders", "columns": {"user_id": 99, "total": 1}}},
        ]})
    error = info.value.payload
    assert error["code"] == "FOREIGN_KEY_VIOLATION" and error["step"] == "bad" and error["stepIndex"] == 1
    assert error["detail"].startswith("step 'bad' (insert_row):")
    assert guide_db.sql("SELECT count(*) FROM orders") == [(0,)]
    with pytest.raises(ActionError) as info:
        runtime.run("run_transaction", guide_db.profile, {"steps": [
            {"action": "delete_rows", "inputs": {"query": "DELETE FROM logs"}},
            {"action": "no_such_action", "inputs": {}}]})
    assert info.value.code == "UNKNOWN_ACTION" and info.value.payload["step"] == "step2"


def test_cli_items_and_batch_mode(guide_db, tmp_path) -> None:
    items = tmp_path / "items.json"
    items.write_text(json.dumps(_user_items("cli1@x.com", "john@example.com")))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pgactions", "run", "insert_row", "-c",
                               _profile_file(tmp_path, guide_db.profile),
                               "--items", f"@{items}", *args], capture_output=True, text=True)

    independent = cli("--batch-mode", "independent")
    assert independent.returncode == 3  # one item failed (exit 3: a batch ran, some items failed)
    assert [r["ok"] for r in json.loads(independent.stdout)["items"]] == [True, False]
    items.write_text(json.dumps(_user_items("cli2@x.com", "john@example.com")))
    failed = cli("--batch-mode", "transaction")
    assert failed.returncode == 1 and json.loads(failed.stdout)["error"]["itemIndex"] == 1
    assert "cli1@x.com" in _emails(guide_db) and "cli2@x.com" not in _emails(guide_db)


def _profile_file(tmp_path, profile: dict) -> str:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    return str(path)
