"""Issue 15's "done when", in a real headless Chromium: a person saves a connection through the
playground, tests it, then runs every example of every action from its generated form and reads
the answer (the OK line, the table, the JSON) with no error in the browser console.

One browser and one ``pgactions serve`` for the module (the fixtures of ``test_playground``), one
schema holding the guide's sample tables (``pgactions.devtools.demo.SAMPLE_SCHEMA``) and the
``user_count`` function the function examples name.  Before each example the sample data is put
back, so every example runs on the data the guide describes whatever ran before it.  The tests
are parametrized by (action, example index); the page is loaded once per action and its examples
run in sequence.  What the page sends is read from ``fetch`` and must be the example's input and
context exactly: the form neither loses nor changes a value.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgactions.devtools.demo import SAMPLE_SCHEMA
from pgactions.spec.manifests import load_manifests

from . import test_playground as playground_tests  # skips the module where there is no browser or selenium
from .conftest import APP_PASSWORD, TestDB, TestServer
from .serving import Served
from .test_playground import LAPTOP, PHONE, Page

pytestmark = playground_tests.pytestmark
driver, service, shots = playground_tests.driver, playground_tests.service, playground_tests.shots  # its fixtures

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

MANIFESTS = load_manifests()
EXAMPLES = [pytest.param(action_id, index, id=f"{action_id}-{index}")
            for action_id in sorted(MANIFESTS) for index, _ in enumerate(MANIFESTS[action_id].examples)]
EMPTY_CONTEXT = {"trigger": {}, "steps": {}}  # what the page's Context holds when an example has none

# The function the call_function and delete_function examples name: the one create_function's example makes.
USER_COUNT = MANIFESTS["create_function"].examples[0]["input"]["definition"]
SAMPLE_DATA = SAMPLE_SCHEMA[SAMPLE_SCHEMA.index("INSERT INTO"):]
RESET = ("TRUNCATE users, sessions, logs, orders RESTART IDENTITY CASCADE;\n"
         "DROP INDEX IF EXISTS idx_users_email;\n" + SAMPLE_DATA + ";\n" + USER_COUNT)

# Set-up beyond the sample data, so that the example visibly does something.
PREPARE: dict[tuple[str, int], str] = {
    ("create_function", 0): "DROP FUNCTION user_count(text)",
    ("upsert_row", 0): "UPDATE users SET name = 'J. Doe', status = 'inactive' WHERE email = 'john@example.com'",
}

# What the database holds after the example (read as the app role in the module's schema).
EFFECT: dict[tuple[str, int], tuple[str, list[tuple[Any, ...]]]] = {
    ("create_function", 0): ("SELECT to_regprocedure('user_count(text)') IS NOT NULL", [(True,)]),
    ("delete_function", 0): ("SELECT to_regprocedure('user_count(text)') IS NOT NULL", [(False,)]),
    ("delete_rows", 0): ("SELECT count(*) FROM sessions", [(0,)]),
    ("execute_query", 0): ("SELECT to_regclass('idx_users_email') IS NOT NULL", [(True,)]),
    ("execute_query", 1): ("SELECT level, message, created_at::text FROM logs ORDER BY id",
                           [("info", "started", "2026-01-15 10:30:00"), ("error", "failed", "2026-01-15 10:31:00")]),
    ("insert_row", 0): ("SELECT name, status FROM users WHERE email = 'jane@example.com'", [("Jane Roe", "active")]),
    ("insert_rows", 0): ("SELECT user_id, total::text FROM orders WHERE id > 3 ORDER BY id", [(1, "19.90"), (1, "5.00")]),
    ("run_transaction", 0): ("SELECT o.total::text, l.message FROM orders o, logs l WHERE o.id = 4",
                             [("19.90", "order 4 created")]),
    ("update_rows", 0): ("SELECT status, updated_at IS NOT NULL FROM users WHERE email = 'john@example.com'",
                         [("inactive", True)]),
    ("upsert_row", 0): ("SELECT name, status FROM users WHERE email = 'john@example.com'", [("John Doe", "active")]),
    ("upsert_rows", 0): ("SELECT email, name FROM users ORDER BY id",
                         [("john@example.com", "John Doe"), ("mary@example.com", "Mary Major"),
                          ("new@example.com", "New Person")]),
}

# Text the answer's table shows (the rows, the single row, or the output's first list of objects).
SHOWS: dict[tuple[str, int], list[str]] = {
    ("call_function", 0): ["result", "1"],
    ("call_function", 1): ["result", "mixed"],
    ("find_rows", 0): ["John Doe", "john@example.com"],
    ("get_function", 0): ["arguments", "text"],
    ("get_row", 0): ["John Doe"],
    ("get_table_metadata", 0): ["email", "created_at"],
    ("insert_row", 0): ["jane@example.com"],
    ("list_functions", 0): ["user_count"],
    ("list_tables", 0): ["users", "sessions", "logs", "orders"],
    ("query_rows", 0): ["John Doe"],
    ("query_rows", 1): ["John Doe"],
    ("upsert_row", 0): ["john@example.com"],
}

# The output's plain values shown beside its table (data-fact), where the table is one of its lists.
FACTS: dict[tuple[str, int], dict[str, str]] = {
    ("get_function", 0): {"name": "lower", "signature": "lower(text)"},
    ("get_table_metadata", 0): {"name": "users", "kind": "table"},
    ("list_tables", 0): {"count": "4"},
    ("run_transaction", 0): {"committed": "true"},
}

# Installed after each page load: the bodies the page POSTs, as sent.
RECORD_REQUESTS = """
window.__sent = [];
const original = window.fetch;
window.fetch = (url, init) => {
  if (init && init.method === 'POST') window.__sent.push({url: String(url), body: init.body});
  return original(url, init);
};
"""


@pytest.fixture(scope="module")
def sample_db(pg: TestServer) -> Iterator[TestDB]:
    """The module's schema: the guide's sample tables and the user_count function."""
    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    database = TestDB(pg, schema)
    database.sql(SAMPLE_SCHEMA)
    database.sql(USER_COUNT)
    yield database
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


class Playground:
    """The module's page, with the action it shows (loaded once per action)."""

    def __init__(self, page: Page, connection: str) -> None:
        self.page, self.connection = page, connection
        self.action: str | None = None

    def open_action(self, action_id: str) -> None:
        if self.action != action_id:
            self.action = None
            self.page.open(f"#/actions/{action_id}", self.connection)
            self.record_requests()
            self.action = action_id
        self.page.wait(lambda d: d.find_element(By.ID, "action-title").text == MANIFESTS[action_id].title,
                       f"{action_id} not shown")

    def record_requests(self) -> None:
        self.page.driver.execute_script(RECORD_REQUESTS)

    def sent(self) -> dict[str, Any]:
        """The body of the last :run the page sent for the action shown, parsed."""
        requests = [r for r in self.page.driver.execute_script("return window.__sent")
                    if r["url"].endswith(f"/v1/actions/{self.action}:run")]
        assert requests, f"the page sent no {self.action}:run"
        return dict(json.loads(requests[-1]["body"]))


@pytest.fixture(scope="module")
def playground(driver: Any, service: Served, shots: Any, sample_db: TestDB, pg: TestServer) -> Playground:
    """The connection saved and tested through the Connections screen, as a person would."""
    driver.get_log("browser")
    page = Page(driver, service.base_url, shots)
    page.open("#/connections")
    name = f"examples-{sample_db.schema}"
    page.click("#conn-new")
    page.css("#conn-id").send_keys(name)
    for path, value in (("host", pg.host), ("port", str(pg.port)), ("database", "pgactions_test"),
                        ("username", "app"), ("password", APP_PASSWORD), ("schema", sample_db.schema)):
        page.type(path, value)
    page.choose("sslMode", "disable")
    page.click("#conn-save")
    page.wait(lambda d: f"Saved {name}" in d.find_element(By.CSS_SELECTOR, ".status").text, "not saved")
    page.click("#conn-test")
    report = page.css(".test-report[data-ok='true']")
    steps = {li.get_attribute("data-step"): li.get_attribute("data-state") for li in page.all(".steps .step")}
    assert steps["authentication"] == steps["query"] == steps["privileges"] == "ok", steps
    assert f"schema {sample_db.schema}: usage, create; 4 tables" in report.text
    assert Select(page.css("#connection-select")).first_selected_option.text == name
    problems = page.console_problems()
    assert not problems, "browser console:\n" + "\n".join(problems)
    return Playground(page, name)


@pytest.fixture
def page(playground: Playground) -> Iterator[Page]:
    """The module's page; the test fails on any console error it caused."""
    current = playground.page
    current.driver.get_log("browser")
    current.expected_statuses = set()
    yield current
    problems = current.console_problems()
    if current.driver.execute_script("return window.innerWidth") != LAPTOP[0]:
        current.size(*LAPTOP)
        playground.action = None  # reload at the laptop width
    assert not problems, "browser console:\n" + "\n".join(problems)


def test_every_action_is_listed_with_its_examples(page: Page, playground: Playground) -> None:
    playground.open_action("query_rows")
    listed = {a.get_attribute("data-action") for a in page.all(".action-list a[data-action]")}
    assert listed == set(MANIFESTS)
    assert all(MANIFESTS[a].examples for a in MANIFESTS), "an action without an example"
    assert len(EXAMPLES) == sum(len(m.examples) for m in MANIFESTS.values())


@pytest.mark.parametrize(("action_id", "index"), EXAMPLES)
def test_example_runs_from_its_form(page: Page, playground: Playground, sample_db: TestDB,
                                    action_id: str, index: int) -> None:
    example = MANIFESTS[action_id].examples[index]
    key = (action_id, index)
    sample_db.sql(RESET)
    if key in PREPARE:
        sample_db.sql(PREPARE[key])
    playground.open_action(action_id)

    page.click(f"button.example[data-example='{index}']")
    assert page.text(f"button.example[data-example='{index}']") == example["title"]
    assert json.loads(page.css("#context").get_attribute("value")) == example.get("context", EMPTY_CONTEXT)
    assert not page.all("#form-problem:not([hidden])")
    if action_id == "run_transaction":  # each step's form comes with its action's manifest
        steps = len(example["input"]["steps"])
        page.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".tx-step .step-inputs .form")) == steps,
                  "the steps' forms were not shown")
    as_json = [e.get_attribute("data-path") for e in page.all("textarea.json-input") if e.is_displayed()]
    assert not as_json, f"the form could not show {as_json}: switched to JSON"
    answer = page.run()
    sent = playground.sent()
    assert sent["inputs"] == example["input"], "the form did not send the example's input"
    assert sent.get("context") == example.get("context", EMPTY_CONTEXT)
    assert sent["connectionId"] == playground.connection

    assert answer.get_attribute("data-state") == "ok", answer.text
    assert page.text("#result .meta .badge") == "OK"
    assert "HTTP 200" in page.text("#result .meta")
    assert re.fullmatch(r"\d+\.\d ms", page.text("[data-stat='ms']"))
    table = page.css("#result .output").text  # the table view (or "No rows.")
    for text in SHOWS.get(key, []):
        assert text in table, f"{text!r} not in the table:\n{table}"
    for fact, value in FACTS.get(key, {}).items():
        assert page.text(f"#result .output-facts [data-fact='{fact}']") == value

    page.screenshot(f"example-{action_id}-{index}", docs=False)
    page.click("#result button[data-view='json']")
    output = json.loads(page.text("#result pre.json"))
    if "output" in example:
        assert output == example["output"]
    if isinstance(output.get("rowCount"), int):
        count = output["rowCount"]
        assert page.text("[data-stat='rowCount']") == f"{count} row{'' if count == 1 else 's'}"
    if key in EFFECT:
        statement, expected = EFFECT[key]
        assert sample_db.sql(statement) == expected
    _check_output(key, output, sample_db.schema)


def _check_output(key: tuple[str, int], output: dict[str, Any], schema: str) -> None:
    """What the JSON answer says, where the manifest gives no output to compare with."""
    if key == ("call_function", 0):
        assert output["result"] == 1
    elif key == ("delete_rows", 0):
        assert output["rowCount"] == 15
    elif key == ("execute_query", 1):
        assert output["rowCount"] == 2
    elif key == ("get_function", 0):
        assert output["name"] == "lower" and output["schema"] == "pg_catalog", output
    elif key == ("get_table_metadata", 0):
        assert {c["name"] for c in output["columns"]} >= {"id", "name", "email", "status", "created_at"}, output
    elif key == ("list_functions", 0):
        assert "user_count" in {f["name"] for f in output["functions"]}, output
    elif key == ("list_schemas", 0):
        assert schema in {s["name"] for s in output["schemas"]}, output
    elif key == ("list_tables", 0):
        assert {t["name"] for t in output["tables"]} >= {"users", "sessions", "logs", "orders"}, output
    elif key == ("query_rows", 1):
        assert output == {"rows": [{"id": 1, "name": "John Doe"}], "rowCount": 1}
    elif key in (("insert_row", 0), ("upsert_row", 0), ("update_rows", 0)):
        assert output["rowCount"] == 1


def test_keyboard_only_call_function(page: Page, playground: Playground, sample_db: TestDB) -> None:
    """From the skip link to the JSON answer without a mouse: Tab to the action, Enter, Tab to the
    example, Enter, Enter on Run (where the focus went), Tab to the JSON view, Enter."""
    sample_db.sql(RESET)
    playground.open_action("query_rows")
    page.css("body").send_keys(Keys.TAB)
    active = page.driver.switch_to.active_element
    assert active.get_attribute("class") == "skip"

    def tab_to(attribute: str, value: str, what: str, limit: int = 80) -> Any:
        nonlocal active
        for _ in range(limit):
            active.send_keys(Keys.TAB)
            active = page.driver.switch_to.active_element
            if active.get_attribute(attribute) == value:
                return active
        raise AssertionError(f"Tab never reached {what}")

    tab_to("data-action", "call_function", "Call Function in the action list").send_keys(Keys.ENTER)
    page.wait(lambda d: d.find_element(By.ID, "action-title").text == "Call Function", "Call Function not shown")
    playground.action = "call_function"
    playground.record_requests()
    tab_to("data-example", "1", "the second example").send_keys(Keys.ENTER)
    active = page.driver.switch_to.active_element
    assert active.get_attribute("id") == "run"
    active.send_keys(Keys.ENTER)
    answer = page.css("#result .answer")
    assert answer.get_attribute("data-state") == "ok", answer.text
    assert playground.sent()["inputs"] == {"name": "lower", "schema": "pg_catalog", "arguments": ["MiXeD"]}
    active = page.driver.switch_to.active_element
    tab_to("data-view", "json", "the JSON view of the answer", limit=40).send_keys(Keys.ENTER)
    assert json.loads(page.text("#result pre.json")) == {"result": "mixed"}
    page.screenshot("examples-keyboard", docs=False)


def test_phone_width_get_table_metadata(page: Page, playground: Playground, sample_db: TestDB) -> None:
    """At 390 px: the action picked from the select, its example run, and the (wide) metadata
    table scrolls inside its box while the page itself never scrolls sideways."""
    sample_db.sql(RESET)
    page.size(*PHONE)
    playground.action = None
    playground.open_action("query_rows")
    assert page.driver.execute_script("return window.innerWidth") == PHONE[0]
    Select(page.css("#action-select")).select_by_value("get_table_metadata")
    page.wait(lambda d: d.find_element(By.ID, "action-title").text == "Get Table Metadata", "not chosen")
    page.click("button.example[data-example='0']")
    answer = page.run()
    assert answer.get_attribute("data-state") == "ok", answer.text
    assert "created_at" in page.text("#result table")
    widths = page.driver.execute_script(
        "return [document.documentElement.scrollWidth, Math.max(...[...document.querySelectorAll("
        "'header, .action-main, .result, .table-wrap, .meta, .view-tabs')].map(e => e.getBoundingClientRect().right))]")
    assert widths[0] <= PHONE[0] and widths[1] <= PHONE[0], widths
    page.screenshot("examples-phone", full_page=True, docs=False)
