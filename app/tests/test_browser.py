"""The web client end to end: headless Chromium (Debian's) against a live `alle web` + `alle worker`.

Without Chromium these tests skip with one line; under CI (`CI=true`) they fail instead, so CI never skips them.
Screenshots of each main screen land in one directory, printed at the end of the run.
"""

from __future__ import annotations

import base64
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import SharedWeb, Spawn, signup_and_login, wait_for

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]
PASSWORD = "plum-orchard-lantern-42"
#: How often a wait looks at the page again. Selenium's default, 0.5 s, is paid by almost every step of a test that
#: waits for the page to react: a journey spent about half its time asleep.
POLL_SECONDS = 0.02
_absent = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
MISSING = (
    f"browser tests need Chromium and its driver, and {' and '.join(_absent)} is missing: "
    "apt-get install chromium chromium-driver"
    if _absent
    else ""
)
if MISSING and os.environ.get("CI") != "true":
    pytest.skip(MISSING, allow_module_level=True)
#: One xdist worker runs the whole module in a row (bin/test's --dist loadgroup): one Chromium start, not one per
#: worker and again each time a worker comes back to the module.
pytestmark = pytest.mark.xdist_group("browser")

#: Runs before the page's own script on every document, so no violation goes unseen.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


class Report:
    """Registered as a plugin so the screenshot directory and figures print in pytest's closing summary."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.figures: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if any(self.directory.iterdir()):
            for figure in self.figures:
                terminalreporter.write_line(f"web client: {figure}")
            terminalreporter.write_line(f"web client screenshots: {self.directory}")


@pytest.fixture(scope="session")
def report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Report:
    directory = Path(os.environ.get("ALLE_SCREENSHOTS", tmp_path_factory.mktemp("screenshots")))
    directory.mkdir(parents=True, exist_ok=True)
    found = Report(directory)
    request.config.pluginmanager.register(found, "alle-browser-report")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One Chromium for this module, gone before the next module's tests start."""
    if MISSING:  # only under CI: elsewhere the module was skipped on import
        pytest.fail(f"{MISSING}; CI never skips them.", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.TemporaryDirectory(prefix="alle-chromium-")
    options.add_argument(f"--user-data-dir={profile.name}")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never try to download a browser or driver
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()
    profile.cleanup()


@pytest.fixture
def page(browser: WebDriver, shared_web: SharedWeb, tmp_path: Path, report: Report) -> Iterator[Browser]:
    """A first visit to the shared web (the report test adds `alle worker`, which nothing else here waits for).

    Every test has the same origin, so each gets a new tab (a new sessionStorage), and the origin's cookies, local
    storage and the HTTP cache are cleared: no test finds another's session or its cached client.
    """
    used = browser.current_window_handle
    browser.switch_to.new_window("tab")
    fresh = browser.current_window_handle
    browser.switch_to.window(used)
    browser.close()
    browser.switch_to.window(fresh)
    browser.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": shared_web.url, "storageTypes": "all"})
    browser.execute_cdp_cmd("Network.clearBrowserCache", {})
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_CSP_VIOLATIONS})
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.set_window_size(1280, 900)
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    found = Browser(browser, shared_web.url, downloads, report.directory)
    yield found
    violations = found.csp_violations()
    browser.get("about:blank")
    assert not violations, f"the client broke its Content-Security-Policy: {violations}"


class Browser:
    """The few moves a person makes, waiting for what they would wait for."""

    def __init__(self, driver: WebDriver, base: str, downloads: Path, shots: Path) -> None:
        self.driver = driver
        self.base = base
        self.downloads = downloads
        self.shots = shots

    def open(self, fragment: str = "") -> None:
        violations = self.csp_violations()
        assert not violations, f"the client broke its Content-Security-Policy: {violations}"
        self.driver.get(f"{self.base}/{fragment}")

    def csp_violations(self) -> list[str]:
        found: list[str] = self.driver.execute_script("return window.__cspViolations || []")
        return found

    def wait(self, condition: Any, timeout: float = 30) -> Any:
        """On a timeout, say what the page showed instead (and keep a picture of it)."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=POLL_SECONDS).until(condition)
        except TimeoutException:
            picture = self.shots / f"timeout-{uuid.uuid4().hex[:8]}.png"
            self.driver.save_screenshot(str(picture))
            shown = self.driver.find_element(By.TAG_NAME, "body").text
            raise AssertionError(f"waited {timeout} s in vain; the page ({picture}) showed:\n{shown}") from None

    def heading(self, text: str) -> None:
        self.wait(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), text))

    def notice(self, text: str) -> None:
        self.wait(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".notice"), text))

    def field(self, label: str, scope: str = "main") -> WebElement:
        xpath = f"//{scope}//label[normalize-space()='{label}']"
        found: WebElement = self.wait(ec.presence_of_element_located((By.XPATH, xpath)))
        return self.driver.find_element(By.ID, str(found.get_attribute("for")))

    def fill(self, label: str, value: str, form: str = "main") -> None:
        control = self.field(label, form)
        control.clear()
        control.send_keys(value)

    def button(self, text: str) -> WebElement:
        xpath = f"//button[normalize-space()='{text}' or @aria-label='{text}']"
        found: WebElement = self.wait(ec.element_to_be_clickable((By.XPATH, xpath)))
        return found

    def click(self, text: str) -> None:
        self.button(text).click()

    def link(self, text: str) -> WebElement:
        found: WebElement = self.wait(ec.element_to_be_clickable((By.LINK_TEXT, text)))
        return found

    def sign_up_and_log_in(self, email: str) -> None:
        self.open()
        self.heading("Log in to Alle")
        self.link("Create an account").click()
        self.heading("Create your Alle account")
        self.fill("Email", email)
        self.fill("Password", PASSWORD)
        self.click("Sign up")
        self.notice("Signed up")
        self.fill("Password", PASSWORD)
        self.click("Log in")
        self.heading("Tasks")

    def add_task(self, title: str) -> str:
        """Returns the new task's id, read from its link in the list."""
        self.fill("Title", title, "form[@aria-label='New task']")
        self.click("Add task")
        self.notice(f"Added “{title}”")
        return str(self.link(title).get_attribute("href")).rsplit("/", 1)[-1]

    def downloaded(self, name: str) -> bytes:
        target = self.downloads / name
        wait_for(target.exists, what=f"download of {name}")
        return target.read_bytes()

    def downloaded_csv(self) -> str:
        def found() -> list[Path]:
            return [p for p in self.downloads.iterdir() if p.suffix == ".csv"]

        wait_for(found, what="the report download")
        return found()[0].read_text()

    def shows_no_placeholders(self) -> bool:
        """A null or undefined that slipped into the page would show as that word."""
        words = self.driver.find_element(By.TAG_NAME, "main").text.split()
        return "null" not in words and "undefined" not in words

    def every_control_is_labelled(self) -> bool:
        return bool(
            self.driver.execute_script(
                "return [...document.querySelectorAll('input, select, textarea')]"
                ".every((c) => c.labels.length > 0 || c.hasAttribute('aria-label'))"
            )
        )

    def shot(self, report: Report, name: str) -> None:
        """The whole page, not only what fits in the window (DevTools protocol: captureBeyondViewport)."""
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        picture = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        (report.directory / f"{name}.png").write_bytes(base64.b64decode(picture["data"]))


def tasks_of(db: psycopg.Connection[tuple[object, ...]], email: str, title: str) -> list[tuple[object, ...]]:
    """The user's tasks of that title: the database is shared with other tests."""
    return db.execute(
        "SELECT status, notes FROM tasks JOIN users ON users.id = tasks.owner_id WHERE users.email = %s AND title = %s",
        (email, title),
    ).fetchall()


def test_a_user_signs_up_logs_in_creates_edits_completes_filters_and_deletes_tasks(
    page: Browser, report: Report, shared_db: psycopg.Connection[tuple[object, ...]]
) -> None:
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    page.open()
    page.heading("Log in to Alle")
    started = page.driver.execute_script("return performance.getEntriesByName('alle:interactive')[0].startTime")
    report.figures.append(f"entry page interactive {started:.0f} ms after navigation start")
    page.shot(report, "1-login")
    page.link("Create an account").click()
    page.heading("Create your Alle account")
    page.fill("Email", email)
    page.fill("Password", PASSWORD)
    page.shot(report, "2-signup")
    page.click("Sign up")
    page.notice("Signed up")
    page.fill("Password", PASSWORD)
    page.click("Log in")
    page.heading("Tasks")
    assert page.every_control_is_labelled()

    page.add_task("Buy oat milk")
    page.add_task("Water the plants")
    page.shot(report, "3-tasks")
    assert page.shows_no_placeholders()
    page.link("Buy oat milk").click()
    page.heading("Buy oat milk")
    assert page.every_control_is_labelled() and page.shows_no_placeholders()
    page.fill("Title", "Buy oat milk and bread")
    page.fill("Notes", "the barista one")
    page.click("Save changes")
    page.notice("Saved “Buy oat milk and bread”")
    page.heading("Buy oat milk and bread")
    page.click("Complete task")
    page.notice("is done")
    page.button("Reopen task")
    page.shot(report, "4-task")
    assert tasks_of(shared_db, email, "Buy oat milk and bread") == [("done", "the barista one")]

    page.link("← All tasks").click()
    page.heading("Tasks")
    page.click("Complete “Water the plants”")
    page.notice("“Water the plants” is done")
    page.click("Reopen “Water the plants”")
    page.notice("“Water the plants” is to do")
    assert tasks_of(shared_db, email, "Water the plants") == [("todo", "")]

    Select(page.field("Show")).select_by_visible_text("Done")
    page.wait(ec.url_contains("status=done"))
    page.link("Buy oat milk and bread")
    assert not page.driver.find_elements(By.LINK_TEXT, "Water the plants")
    page.link("Tasks").click()
    page.link("Water the plants").click()
    page.click("Delete task")
    page.click("Yes, delete it")
    page.notice("Deleted “Water the plants”")
    assert tasks_of(shared_db, email, "Water the plants") == []


def test_api_errors_show_next_to_the_field_that_caused_them(page: Browser) -> None:
    page.open("#/signup")
    page.heading("Create your Alle account")
    page.fill("Email", "not-an-email")
    page.fill("Password", PASSWORD)
    page.click("Sign up")
    email = page.field("Email")
    page.wait(lambda _: email.get_attribute("aria-invalid") == "true")
    message = page.driver.find_element(By.ID, str(email.get_attribute("aria-describedby")).split()[-1])
    assert message.is_displayed() and "email" in message.text.lower()
    page.open("#/login")
    page.fill("Email", f"nobody-{uuid.uuid4().hex[:10]}@example.com")  # no account, and no attempts counted yet
    page.fill("Password", PASSWORD)
    page.click("Log in")
    page.wait(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "form [role=alert]"), "Email or password is wrong."))


def test_an_attachment_uploads_and_downloads_back_byte_for_byte(page: Browser, report: Report, tmp_path: Path) -> None:
    page.sign_up_and_log_in(f"{uuid.uuid4().hex[:10]}@example.com")
    page.add_task("File the receipts")
    page.link("File the receipts").click()
    page.heading("File the receipts")
    original = tmp_path / "receipts ü.bin"
    original.write_bytes(os.urandom(300_000) + bytes(range(256)))
    page.field("File to attach (up to 10 MB)").send_keys(str(original))
    page.click("Upload")
    page.notice("Uploaded receipts ü.bin")
    page.shot(report, "5-attachment")
    page.click("Download receipts ü.bin")
    assert page.downloaded("receipts ü.bin") == original.read_bytes()


def test_a_report_is_requested_and_downloaded_when_the_worker_has_made_it(
    page: Browser, report: Report, shared_web: SharedWeb, spawn: Spawn
) -> None:
    spawn("worker", shared_web.env)
    page.sign_up_and_log_in(f"{uuid.uuid4().hex[:10]}@example.com")
    page.add_task("Send the invoice")
    page.link("Reports").click()
    page.heading("Reports")
    page.click("Request a report")
    page.button("Download CSV").click()
    page.shot(report, "6-reports")
    assert "Send the invoice" in page.downloaded_csv()


def test_a_second_user_cannot_see_the_first_users_tasks(page: Browser, report: Report) -> None:
    page.sign_up_and_log_in(f"{uuid.uuid4().hex[:10]}@example.com")
    task_id = page.add_task("Private: plan the surprise party")
    page.click("Log out")
    page.heading("Log in to Alle")
    page.notice("You are logged out.")
    page.sign_up_and_log_in(f"{uuid.uuid4().hex[:10]}@example.com")
    page.wait(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "main .empty"), "No tasks yet"))
    assert "surprise party" not in page.driver.find_element(By.TAG_NAME, "main").text
    page.open(f"#/tasks/{task_id}")
    page.heading("Task not available")
    assert "No such task" in page.driver.find_element(By.CSS_SELECTOR, "main [role=alert]").text
    page.shot(report, "7-other-users-task")


def test_a_double_submitted_create_makes_one_task(
    page: Browser, shared_db: psycopg.Connection[tuple[object, ...]]
) -> None:
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    page.sign_up_and_log_in(email)
    page.fill("Title", "Renew the passport", "form[@aria-label='New task']")
    page.driver.execute_script(
        "const form = document.querySelector('form[aria-label=\"New task\"]');"
        "form.requestSubmit(); form.requestSubmit();"
    )

    def posted_statuses(_: WebDriver) -> list[int] | None:
        statuses: list[int] = page.driver.execute_script(
            "return performance.getEntriesByType('resource')"
            ".filter((e) => e.name.endsWith('/v1/tasks')).map((e) => e.responseStatus)"
        )
        return statuses if len(statuses) == 2 else None

    assert sorted(page.wait(posted_statuses)) == [200, 201]  # the second is the replay of the first
    assert len(tasks_of(shared_db, email, "Renew the passport")) == 1
    page.open("#/tasks?status=todo")
    page.heading("Tasks")
    page.link("Renew the passport")
    assert len(page.driver.find_elements(By.LINK_TEXT, "Renew the passport")) == 1


def test_a_phone_sized_screen_works_with_the_keyboard_alone(page: Browser, report: Report) -> None:
    page.driver.set_window_size(390, 844)
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    keys = ActionChains(page.driver)
    page.open()
    page.heading("Log in to Alle")
    # Focus starts on the heading; Tab moves through email, password, the button, then the sign-up link.
    keys.send_keys(Keys.TAB * 4, Keys.ENTER).perform()
    page.heading("Create your Alle account")
    keys.send_keys(Keys.TAB, email, Keys.TAB, PASSWORD, Keys.ENTER).perform()
    page.notice("Signed up")
    keys.send_keys(Keys.TAB * 2, PASSWORD, Keys.ENTER).perform()
    page.heading("Tasks")
    keys.send_keys(Keys.TAB, "Call the plumber", Keys.ENTER).perform()
    page.notice("Added “Call the plumber”")
    outline = page.driver.execute_script(
        "arguments[0].focus(); const style = getComputedStyle(arguments[0]);"
        "return style.outlineStyle + ' ' + style.outlineWidth",
        page.link("Call the plumber"),
    )
    assert outline.split()[0] != "none" and float(outline.split()[1].removesuffix("px")) >= 2
    keys.send_keys(Keys.ENTER).perform()
    page.heading("Call the plumber")
    assert page.shows_no_placeholders()
    fits = page.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    assert fits, "the page scrolls sideways on a phone-sized screen"
    page.shot(report, "8-phone-task")


def test_the_task_list_pages_through_more_tasks_than_fit_on_a_page(page: Browser) -> None:
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    headers = signup_and_login(page.base, email)
    for number in range(1, 13):
        created = httpx.post(f"{page.base}/v1/tasks", json={"title": f"Chore {number:02}"}, headers=headers)
        assert created.status_code == 201
    page.open()
    page.fill("Email", email)
    page.fill("Password", "correct horse battery")
    page.click("Log in")
    page.link("Chore 12")  # newest first
    assert "Page 1 of 2 · 12 tasks" in page.driver.find_element(By.CSS_SELECTOR, ".pager").text
    page.link("Next").click()
    page.link("Chore 01")
    assert len(page.driver.find_elements(By.CSS_SELECTOR, ".task")) == 2
    assert "Page 2 of 2" in page.driver.find_element(By.CSS_SELECTOR, ".pager").text
