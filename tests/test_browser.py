"""The spawn page in a real browser (headless Chromium): log in, see only one's own profiles, pick one, watch the
progress page reach the server, and find the container limited as the profile says."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.browser]

SCREENSHOT = Path(__file__).parent.parent / "docs" / "_static" / "profile-form.png"
PROGRESS_SCREENSHOT = SCREENSHOT.with_name("spawn-progress.png")
# The docs' pictures are taken from these pages, and rewritten only when asked: MUS_UPDATE_DOCS_PICTURES=1.
UPDATE_PICTURES = bool(os.environ.get("MUS_UPDATE_DOCS_PICTURES"))
CONFIG = """
DB = {"preset": "postgres", "image": c.MultiUserSpawner.database_image}  # the test image
# always show the progress page, however fast the spawn
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
c.MultiUserSpawner.profiles = [
    {"slug": "student-small", "display_name": "Student: 0.5 CPU, 512 MB", "groups": ["students"], "default": True,
     "description": "For the weekly exercises.",
     "spawner_override": {"cpu_limit": 0.5, "mem_limit": "512M"}},
    {"slug": "student-db", "display_name": "Student with a database", "groups": ["students"],
     "description": "0.5 CPU, 768 MB and a private Postgres for the databases course.",
     "spawner_override": {"cpu_limit": 0.5, "mem_limit": "768M", "services": {"db": DB}}},
    {"slug": "staff", "display_name": "Staff: 1 CPU, 1 GB", "groups": ["staff"],
     "spawner_override": {"cpu_limit": 1.0, "mem_limit": "1G"}},
    {"slug": "staff-db", "display_name": "Staff with a database", "groups": ["staff"],
     "spawner_override": {"cpu_limit": 1.0, "mem_limit": "1G", "services": {"db": DB}}},
]
"""


@pytest.fixture(scope="module")
def hub(make_hub, docker_client):
    return make_hub({"student1": ["students"], "staff1": ["staff"]}, CONFIG)


@pytest.fixture
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        message = "Debian's chromium and chromium-driver are not installed"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile_dir = tempfile.mkdtemp(prefix="chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,900",
        f"--user-data-dir={profile_dir}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile_dir, ignore_errors=True)


def log_in(browser, hub, user):
    from selenium.webdriver.common.by import By

    browser.get(f"{hub.url}/hub/login")
    browser.find_element(By.ID, "username_input").send_keys(user)
    browser.find_element(By.ID, "password_input").send_keys("pw")
    browser.find_element(By.ID, "login_submit").click()


def visible_profiles(browser):
    from selenium.webdriver.common.by import By

    browser.get(browser.current_url.split("/hub/")[0] + "/hub/spawn")
    radios = browser.find_elements(By.CSS_SELECTOR, "input[name=profile]")
    labels = [browser.find_element(By.CSS_SELECTOR, f"label[for={r.get_attribute('id')}]").text for r in radios]
    return radios, labels


def wait_for(condition, timeout=120, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_student_sees_student_profiles_picks_one_and_gets_its_limits(hub, browser, docker_client):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    log_in(browser, hub, "student1")
    radios, labels = visible_profiles(browser)
    assert labels == ["Student: 0.5 CPU, 512 MB", "Student with a database"]
    assert radios[0].is_selected()  # the default
    if UPDATE_PICTURES:
        browser.save_screenshot(str(SCREENSHOT))
    # choose with the keyboard: the arrow key moves the radio selection
    radios[0].send_keys(Keys.ARROW_DOWN)
    assert radios[1].is_selected()
    browser.find_element(By.CSS_SELECTOR, "form#spawn_form [type=submit]").click()
    # the progress page shows stages, then the browser lands on the server
    wait_for(
        lambda: "/hub/spawn-pending/" in browser.current_url or "/user/student1" in browser.current_url,
        what="the progress page",
    )
    seen_messages = set()
    captured = []  # the docs' picture of the progress page is replaced only by a complete one

    def on_server():
        if "/hub/spawn-pending/" in browser.current_url:
            try:
                events = browser.find_elements(By.CSS_SELECTOR, "#progress-log .progress-log-event")
                seen_messages.update(e.get_attribute("textContent") for e in events)
                if any("Database" in m for m in seen_messages) and not captured:
                    browser.find_element(By.CSS_SELECTOR, "details").click()  # unfold the event log
                    captured.append(browser.get_screenshot_as_png())
            except (StaleElementReferenceException, NoSuchElementException):
                pass  # the page moved on to the server while being read: the next look tells
        return "/user/student1/" in browser.current_url

    wait_for(on_server, what="the server")
    if captured and UPDATE_PICTURES:
        PROGRESS_SCREENSHOT.write_bytes(captured[0])
    assert any("home volume" in m for m in seen_messages), seen_messages
    assert any("Service db is ready" in m for m in seen_messages), seen_messages
    container = docker_client.containers.get(f"{hub.prefix}-student1")
    host_config = container.attrs["HostConfig"]
    assert host_config["CpuQuota"] / host_config["CpuPeriod"] == 0.5
    assert host_config["Memory"] == 768 * 2**20
    assert docker_client.containers.get(f"{hub.prefix}-student1_db").status == "running"
    hub.stop_server("student1")


def test_staff_sees_only_staff_profiles(hub, browser):
    log_in(browser, hub, "staff1")
    _, labels = visible_profiles(browser)
    assert labels == ["Staff: 1 CPU, 1 GB", "Staff with a database"]
