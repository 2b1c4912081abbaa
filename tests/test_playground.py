"""The playground page (``pgactions serve`` at ``/``) in a real headless Chromium: Debian's
``chromium`` and ``chromium-driver`` driven by selenium, nothing downloaded at test time.

One browser and one service for the module; each test saves a screenshot in the test output
folder (``PGACTIONS_TEST_OUTPUT``, else pytest's temporary folder) and, when
``PGACTIONS_DOCS_SCREENSHOTS=docs/img`` is set, the docs' copy ``playground-<name>.png``.  Every
test ends by reading the browser console: no JavaScript error, and no failed request but the
error statuses the test provokes on purpose.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import APP_PASSWORD, TestDB, TestServer
from .serving import Served, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NO_BROWSER = ("no headless browser: install Debian's chromium and chromium-driver "
              "(apt-get install -y chromium chromium-driver; .ci/run does)")

pytestmark = pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
                                reason=NO_BROWSER)

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

LAPTOP = (1280, 800)
PHONE = (390, 844)
_NETWORK_STATUS = re.compile(r"status of (\d{3})")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, pg: TestServer) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("playground") / "state", "--no-auth") as served:
        yield served


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="pgactions-chromium-")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}",
                     f"--window-size={LAPTOP[0]},{LAPTOP[1]}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"Chromium is installed but did not start: {exc.msg}")
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("PGACTIONS_TEST_OUTPUT")
    folder = Path(given) / "playground" if given else tmp_path_factory.mktemp("playground-screens")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Page:
    """The playground in the module's browser, and what a test does with it."""

    def __init__(self, driver: Any, base_url: str, shots: Path) -> None:
        self.driver, self.base_url, self.shots = driver, base_url, shots
        self.expected_statuses: set[int] = set()
        self.size(*LAPTOP)

    def size(self, width: int, height: int) -> None:
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})

    def open(self, route: str = "#/actions/query_rows", connection: str | None = None) -> None:
        self.driver.get(self.base_url + "/healthz")  # same origin: set what the header's select keeps for the tab
        self.driver.execute_script("if (arguments[0]) sessionStorage.setItem('pgactions.connection', arguments[0]);"
                                   "else sessionStorage.removeItem('pgactions.connection');", connection)
        self.driver.get(f"{self.base_url}/{route}")
        self.wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true",
                  "the page did not finish loading")

    def wait(self, condition: Callable[[Any], Any], what: str, timeout: float = 15) -> Any:
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition)
        except TimeoutException:
            self.screenshot("timeout", docs=False)
            raise AssertionError(f"{what} (screenshot: {self.shots / 'timeout.png'})") from None

    def css(self, selector: str) -> WebElement:
        return self.wait(lambda d: _visible(d.find_elements(By.CSS_SELECTOR, selector)), f"no visible {selector}")

    def all(self, selector: str) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def field(self, path: str, scope: str = "") -> WebElement:
        return self.css(f"{scope} :is(input, select, textarea)[data-path='{path}']".strip())

    def type(self, path: str, text: str, scope: str = "") -> None:
        element = self.field(path, scope)
        element.clear()
        element.send_keys(text)

    def choose(self, path: str, value: str, scope: str = "") -> None:
        Select(self.field(path, scope)).select_by_visible_text(value)

    def click(self, selector: str) -> None:
        self.css(selector).click()

    def text(self, selector: str) -> str:
        return str(self.css(selector).text)

    def use_connection(self, connection_id: str) -> None:
        Select(self.css("#connection-select")).select_by_value(connection_id)

    def run(self) -> WebElement:
        self.click("#run")
        return self.css("#result .answer")

    def screenshot(self, name: str, full_page: bool = False, docs: bool = True) -> Path:
        path = self.shots / f"{name}.png"
        if full_page:  # the whole page, not only the viewport
            size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
            path.write_bytes(base64.b64decode(shot["data"]))
        else:
            self.driver.save_screenshot(str(path))
        folder = os.environ.get("PGACTIONS_DOCS_SCREENSHOTS")
        if folder and docs:
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(folder) / f"playground-{name}.png")
        return path

    def console_problems(self) -> list[str]:
        """Console entries at SEVERE: JavaScript errors, and failed requests other than expected statuses."""
        problems = []
        for entry in self.driver.get_log("browser"):
            if entry["level"] != "SEVERE":
                continue
            status = _NETWORK_STATUS.search(entry["message"])
            if entry.get("source") == "network" and status and int(status.group(1)) in self.expected_statuses:
                continue
            if entry.get("source") == "network" and "/favicon.ico " in entry["message"]:
                continue  # asked for by the /healthz visit in open(); the playground links its own icon
            problems.append(f"{entry.get('source')}: {entry['message']}")
        return problems


def _visible(elements: list[WebElement]) -> WebElement | None:
    for element in elements:
        if element.is_displayed():
            return element
    return None


@pytest.fixture
def page(driver: Any, service: Served, shots: Path) -> Iterator[Page]:
    driver.get_log("browser")  # what an earlier test left
    current = Page(driver, service.base_url, shots)
    yield current
    problems = current.console_problems()
    current.size(*LAPTOP)
    assert not problems, "browser console:\n" + "\n".join(problems)


def save_connection(service: Served, db: TestDB) -> str:
    """The test's schema saved as a connection (named after the schema), through the API."""
    response = service.client.put(f"/v1/connections/{db.schema}", json=db.profile)
    assert response.status_code in (200, 201), response.text
    return db.schema


def fill_connection_form(page: Page, pg: TestServer, password: str, ssl: bool) -> None:
    page.type("host", pg.host)
    page.type("port", str(pg.port))
    page.type("database", "pgactions_test")
    page.type("username", "app")
    page.type("password", password)
    if ssl:  # verify-ca with the suite's CA pasted as PEM: the report then shows TLS and the certificate
        page.choose("sslMode", "verify-ca")
        ca = Path(pg.ca_file).read_text()
        page.driver.execute_script("arguments[0].value = arguments[1]", page.field("sslRootCert"), ca)
    else:
        page.choose("sslMode", "disable")


def test_save_a_connection_and_test_it(page: Page, service: Served, pg: TestServer) -> None:
    page.open("#/connections")
    page.click("#conn-new")
    page.css("#conn-id").send_keys("shop")
    ssl = pg.local is not None and pg.local.ssl
    fill_connection_form(page, pg, APP_PASSWORD, ssl)
    page.click("#conn-save")
    page.wait(lambda d: "Saved shop" in d.find_element(By.CSS_SELECTOR, ".status").text, "not saved")
    assert page.css("#saved-connections li[data-id='shop']")
    stored = service.get("/v1/connections/shop").json()["connection"]
    assert stored["password"] == "********" and stored["host"] == pg.host and stored["port"] == pg.port
    assert page.field("password").get_attribute("value") == "********"  # the form shows the mask, as saved

    page.click("#conn-test")
    report = page.css(".test-report[data-ok='true']")
    steps = {li.get_attribute("data-step"): li.get_attribute("data-state") for li in page.all(".steps .step")}
    assert list(steps) == ["dns", "tcp", "tls", "authentication", "database", "query", "privileges"]
    assert set(steps.values()) <= {"ok", "skipped"} and steps["authentication"] == "ok"
    assert re.search(r"\d+\.\d ms", page.text(".steps [data-step='authentication'] .ms"))
    if ssl:
        assert steps["tls"] == "ok"
        assert re.search(r"TLSv1\.[23], \S+, certificate verified", report.text)
        assert "Certificate" in report.text
    assert "Tested the saved shop" in page.text(".status")
    assert Select(page.css("#connection-select")).first_selected_option.text == "shop"
    page.screenshot("connection-test")


def test_a_wrong_password_shows_authentication_failed(page: Page, pg: TestServer) -> None:
    page.open("#/connections")
    page.click("#conn-new")
    page.css("#conn-id").send_keys("wrong")
    fill_connection_form(page, pg, "not-the-password", ssl=False)
    page.click("#conn-test")
    page.css(".test-report[data-ok='false']")
    assert page.css(".steps [data-step='authentication']").get_attribute("data-state") == "failed"
    assert page.css(".steps [data-step='query']").get_attribute("data-state") == "skipped"
    card = page.css(".test-report .error-card[data-code='AUTHENTICATION_FAILED']")
    assert "failed at authentication" in card.text
    fixes = [li.text for li in card.find_elements(By.CSS_SELECTOR, ".fix li")]
    assert any("password" in fix for fix in fixes), fixes
    page.screenshot("connection-failed")


def test_query_rows_from_an_example_shows_the_table(page: Page, service: Served, guide_db: TestDB) -> None:
    connection = save_connection(service, guide_db)
    page.open("#/actions/query_rows", connection)
    assert Select(page.css("#connection-select")).first_selected_option.text == connection
    categories = [h.text for h in page.all(".action-list h3")]
    assert categories[:2] == ["READ", "WRITE"] and "METADATA" in categories
    page.click("button.example[data-example='1']")  # a user by the e-mail the trigger received
    assert page.field("query").get_attribute("value") == "SELECT id, name FROM users WHERE email = $1"
    assert page.field("parameters.0").get_attribute("value") == "{{trigger.email}}"
    assert "Uses $1" in page.text(".sql-hint")
    assert json.loads(page.css("#context").get_attribute("value")) == {"trigger": {"email": "john@example.com"}}
    answer = page.run()
    assert [th.text for th in answer.find_elements(By.CSS_SELECTOR, "thead th")] == ["id", "name"]
    assert [td.text for td in answer.find_elements(By.CSS_SELECTOR, "tbody td")] == ["1", "John Doe"]
    assert page.text("[data-stat='rowCount']") == "1 row"
    assert re.fullmatch(r"\d+\.\d ms", page.text("[data-stat='ms']"))
    page.driver.execute_script("document.querySelector('.action-main').scrollTop = 0")
    page.screenshot("query-rows")
    page.click("#result button[data-view='json']")
    assert json.loads(page.text("#result pre.json")) == {"rows": [{"id": 1, "name": "John Doe"}], "rowCount": 1}


def test_keyboard_only(page: Page, service: Served, guide_db: TestDB) -> None:
    """Tab reaches the controls in order (skip link first), Enter picks an example, Ctrl+Enter runs."""
    page.open("#/actions/query_rows", save_connection(service, guide_db))
    body = page.css("body")
    body.send_keys(Keys.TAB)
    active = page.driver.switch_to.active_element
    assert active.get_attribute("class") == "skip"
    for _ in range(80):  # the action list, then the example buttons
        if active.get_attribute("data-example") == "0":
            break
        active.send_keys(Keys.TAB)
        active = page.driver.switch_to.active_element
    else:
        raise AssertionError("Tab never reached the first example")
    active.send_keys(Keys.ENTER)
    assert "FROM users WHERE status = $1" in page.field("query").get_attribute("value")
    assert page.driver.switch_to.active_element.get_attribute("id") == "run"  # focus moves to Run
    page.field("query").send_keys(Keys.CONTROL, Keys.ENTER)
    answer = page.css("#result .answer")
    assert answer.get_attribute("data-state") == "ok", answer.text
    assert "John Doe" in page.text("#result table")
    page.screenshot("keyboard", docs=False)


def test_insert_row_from_the_generated_form(page: Page, service: Served, guide_db: TestDB) -> None:
    page.open("#/actions/insert_row", save_connection(service, guide_db))
    page.type("table", "users")
    for key, value in (("name", "Ada Lovelace"), ("email", "ada@example.com"), ("status", "{{ trigger.status }}")):
        page.click("button[data-add='columns']")
        row = page.all("[data-object='columns'] .kv-row")[-1]
        row.find_element(By.CSS_SELECTOR, ".kv-key").send_keys(key)
        row.find_element(By.CSS_SELECTOR, ".value-input").send_keys(value)
    context = page.css("#context")
    context.clear()
    context.send_keys('{"trigger": {"status": "invited"}}')
    answer = page.run()
    assert answer.get_attribute("data-state") == "ok", answer.text
    assert page.text("[data-stat='rowCount']") == "1 row"
    assert "ada@example.com" in page.text("#result table")
    assert guide_db.sql("SELECT name, status FROM users WHERE email = 'ada@example.com'") == [("Ada Lovelace", "invited")]
    assert page.text("[data-stat='insertedId']") == "insertedId 3"
    page.driver.execute_script("document.querySelector('.action-main').scrollTop = 0")
    page.screenshot("insert-row")


def test_a_unique_violation_shows_the_error_card(page: Page, service: Served, guide_db: TestDB) -> None:
    page.expected_statuses = {409}
    page.open("#/actions/insert_row", save_connection(service, guide_db))
    page.type("table", "users")
    page.click("button.example[data-example='0']")  # columns from the trigger: name, email, status, created_at
    context = page.css("#context")
    context.clear()
    context.send_keys('{"trigger": {"name": "Another John", "email": "john@example.com"}}')
    context.send_keys(Keys.CONTROL, Keys.ENTER)  # Ctrl+Enter runs from any field
    card = page.css("#result .error-card")
    assert card.get_attribute("data-code") == "UNIQUE_VIOLATION"
    assert page.text("#result .meta .badge") == "UNIQUE_VIOLATION"
    assert "HTTP 409" in page.text("#result .meta")
    assert card.find_elements(By.CSS_SELECTOR, ".fix li") and "not retryable" in card.text
    assert "users_email_key" in card.text  # the constraint, among the details
    assert guide_db.sql("SELECT count(*) FROM users WHERE email = 'john@example.com'") == [(1,)]
    page.screenshot("error-card")


def test_run_transaction_steps_and_batch_items(page: Page, service: Served, guide_db: TestDB) -> None:
    connection = save_connection(service, guide_db)
    page.open("#/actions/run_transaction", connection)
    page.click("button.example[data-example='0']")  # an order, then a log line reading the order's id
    page.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".tx-step input[data-path='table']")) == 2, "steps not shown")
    assert page.field("steps.1.action").get_attribute("value") == "insert_row"
    total = page.all(".tx-step")[0].find_elements(By.CSS_SELECTOR, "[data-object='columns'] .kv-row")[1]
    assert total.find_element(By.CSS_SELECTOR, ".kv-key").get_attribute("value") == "total"
    total.find_element(By.CSS_SELECTOR, ".value-input").clear()
    total.find_element(By.CSS_SELECTOR, ".value-input").send_keys("5.25")  # a step edited in its own form
    answer = page.run()
    assert answer.get_attribute("data-state") == "ok", answer.text
    order = guide_db.sql("SELECT id, total::text FROM orders")
    assert [row[1] for row in order] == ["5.25"]
    assert guide_db.sql("SELECT message FROM logs") == [(f"order {order[0][0]} created",)]

    page.open("#/actions/execute_query", connection)
    page.type("query", "UPDATE users SET status = $1 WHERE id = $2")
    for value in ("gone", "1"):
        page.click("button[data-add='parameters']")
        page.all("[data-array='parameters'] .value-input")[-1].send_keys(value)
    Select(page.all("[data-array='parameters'] .value-kind")[-1]).select_by_value("number")
    page.click("#mode-batch")
    page.click("#add-item")  # a copy of item 1, then changed
    second = page.css(".batch-item[data-index='1'] [data-array='parameters'] .rows li:last-child .value-input")
    second.clear()
    second.send_keys("2")
    Select(page.css("#batch-mode")).select_by_value("transaction")
    answer = page.run()
    assert answer.get_attribute("data-state") == "ok", answer.text
    assert "transaction: 2 succeeded, 0 failed" in page.text("#result .meta")
    assert guide_db.sql("SELECT id, status FROM users ORDER BY id") == [(1, "gone"), (2, "gone")]
    page.screenshot("batch")


def test_the_phone_layout(page: Page, service: Served, guide_db: TestDB) -> None:
    page.size(*PHONE)
    page.open("#/actions/query_rows", save_connection(service, guide_db))
    assert page.driver.execute_script("return window.innerWidth") == PHONE[0]
    assert not page.all(".action-list")[0].is_displayed()  # the list becomes a select
    Select(page.css("#action-select")).select_by_value("find_rows")
    page.wait(lambda d: d.find_element(By.ID, "action-title").text == "Find Rows", "find_rows not chosen")
    page.click("button.example[data-example='0']")
    answer = page.run()
    assert "John Doe" in answer.text
    widths = page.driver.execute_script(
        "return [document.documentElement.scrollWidth, Math.max(...[...document.querySelectorAll("
        "'header, .action-main, .result, .error-card')].map(e => e.getBoundingClientRect().right))]")
    assert widths[0] <= PHONE[0] and widths[1] <= PHONE[0], widths  # nothing wider than the phone
    page.screenshot("phone", full_page=True)


def test_an_api_key_is_asked_for_and_kept_in_the_session(driver: Any, tmp_path_factory: pytest.TempPathFactory,
                                                          shots: Path, pg: TestServer) -> None:
    with serve(tmp_path_factory.mktemp("playground-auth") / "state") as locked:
        key = locked.create_key("playground")
        driver.get_log("browser")
        page = Page(driver, locked.base_url, shots)
        page.expected_statuses = {401}
        driver.get("about:blank")
        driver.get(f"{locked.base_url}/#/actions/query_rows")
        page.css("#key-dialog[open]")
        page.css("#api-key").send_keys(Keys.ESCAPE)  # declined: the page says why and stops asking
        card = page.css("#result .error-card")
        assert card.get_attribute("data-code") == "UNAUTHORIZED"
        assert not page.all("#key-dialog[open]")
        page.click("#key-button")
        page.css("#key-dialog[open]")
        page.screenshot("api-key")
        page.css("#api-key").send_keys(key, Keys.ENTER)
        page.wait(lambda d: d.find_elements(By.CSS_SELECTOR, ".action-list a[data-action]"), "the actions did not load")
        page.wait(lambda d: d.find_element(By.ID, "action-title").text == "Query Rows", "Query Rows not shown")
        assert driver.execute_script("return sessionStorage.getItem('pgactions.apiKey')") == key
        assert key not in driver.current_url
        assert page.text("#key-button") == "API key ✓"
        assert not page.console_problems()
