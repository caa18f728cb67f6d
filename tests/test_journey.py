"""A user's whole day in a real browser (headless Chromium): log in on the hub's login page, land in JupyterLab,
create a notebook and run cells in it (a file in the home directory; for staff, a row in their private Postgres,
reached with the environment variables alone), stop the server from the hub's home page, start it again, and read
the file and the row back in the same notebook."""

from __future__ import annotations

import pytest
from test_browser import SCREENSHOT, UPDATE_PICTURES, log_in, wait_for
from test_browser import browser as chromium  # noqa: F401 - a fixture, used by its name

pytestmark = [pytest.mark.docker, pytest.mark.browser]

# the docs' picture of a notebook, rewritten only with MUS_UPDATE_DOCS_PICTURES=1 as test_browser's are
PICTURES = {"staff1": SCREENSHOT.with_name("journey-notebook.png")}
CONFIG = """
c.MultiUserSpawner.group_overrides = {
    "20-staff": {
        "groups": ["staff"],
        "spawner_override": {"services": {"db": {"preset": "postgres", "image": c.MultiUserSpawner.database_image}}},
    },
}
"""
NOTEBOOK = "Untitled.ipynb"  # what JupyterLab calls the first new notebook
WRITE_FILE = 'open(__import__("os").path.expanduser("~/hello.txt"), "w").write("hello from " + USER)'
READ_FILE = 'print(open(__import__("os").path.expanduser("~/hello.txt")).read())'
# psycopg.connect("") takes the host, user, password and database from the PG* variables the spawner sets
WRITE_ROW = (
    'import psycopg; conn = psycopg.connect(""); conn.execute("CREATE TABLE notes (note text)"); '
    'conn.execute("INSERT INTO notes VALUES (\'the row of \' || %s)", [USER]); conn.commit(); print("row written")'
)
READ_ROW = 'import psycopg; print(psycopg.connect("").execute("SELECT note FROM notes").fetchall())'


@pytest.fixture(scope="module")
def hub(make_hub):
    return make_hub({"student1": ["students"], "staff1": ["staff"]}, CONFIG)


def find(browser, selector: str):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, selector)


def in_jupyterlab(browser, user: str) -> bool:
    return f"/user/{user}/lab" in browser.current_url and bool(find(browser, "#jp-main-dock-panel"))


def run_cell(browser, code: str, timeout: float = 120) -> str:
    """Type ``code`` into the notebook's last cell as a user would, run it with Shift+Enter, and return its output
    (JupyterLab then opens a new, empty cell below, the next one to type into)."""
    from selenium.common.exceptions import ElementNotInteractableException, StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    cells: list = []

    def typed() -> bool:
        # a new notebook's first cell is drawn a moment after the panel: click once it can take the keys
        cells[:] = find(browser, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
        try:
            editor = cells[-1].find_element("css selector", ".cm-content")
            editor.click()
            editor.send_keys(code)
        except (IndexError, ElementNotInteractableException, StaleElementReferenceException):
            return False
        return True

    wait_for(typed, what="a cell to type into")
    ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    count = len(cells)

    def output():
        cells = find(browser, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
        if len(cells) <= count - 1:
            return None
        ran = cells[count - 1]
        prompt = ran.find_elements("css selector", ".jp-InputPrompt")
        if prompt and "[*]" in prompt[0].text:
            return None  # still running
        outputs = ran.find_elements("css selector", ".jp-OutputArea-output")
        return outputs[-1].text.strip() if outputs else None

    return wait_for(output, timeout, what=f"the output of {code!r}")


def save_notebook(browser) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ActionChains(browser).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
    # the tab's "unsaved" dot goes once the file is written to the home volume
    wait_for(lambda: not find(browser, ".jp-mod-dirty"), what="the notebook to be saved")


def open_notebook(browser, hub, user: str) -> None:
    browser.get(f"{hub.url}/user/{user}/lab/tree/{NOTEBOOK}")
    wait_for(lambda: find(browser, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"), what="the notebook")
    wait_for_kernel(browser)


def wait_for_kernel(browser) -> None:
    # a cell run before the kernel is up is not run at all: wait for the status bar's "Python 3 (ipykernel) | Idle"
    wait_for(lambda: any("| Idle" in e.text for e in find(browser, "#jp-main-statusbar")), what="the kernel")


def stop_and_start_from_home(browser, hub, user: str) -> None:
    """Stop the server with the home page's "Stop My Server", then start it with "Start My Server"."""
    browser.get(f"{hub.url}/hub/home")
    wait_for(lambda: find(browser, "#stop"), what="the Stop My Server button")[0].click()
    start = wait_for(lambda: [b for b in find(browser, "#start") if b.is_displayed()], what="Start My Server")
    # the page offers a new start as soon as the hub has the request; the stop itself may still be under way
    wait_for(lambda: not hub.user(user)["servers"], what="the server to stop")
    start[0].click()
    wait_for(lambda: in_jupyterlab(browser, user), timeout=180, what="JupyterLab after the new start")


def take_picture(browser, path) -> None:
    from selenium.webdriver.common.by import By

    # JupyterLab's first-run question about its news would cover the notebook: answered "No" as a user would
    for button in browser.find_elements(By.XPATH, "//button[normalize-space()='No']"):
        button.click()
    wait_for(lambda: not browser.find_elements(By.XPATH, "//button[normalize-space()='No']"), what="the question")
    browser.save_screenshot(str(path))


@pytest.mark.parametrize("user", ["student1", "staff1"])
def test_a_notebooks_work_survives_a_stop_and_start_from_the_hubs_home_page(hub, chromium, user, docker_client):  # noqa: F811
    browser = chromium
    log_in(browser, hub, user)
    # the hub starts the server at once (no profiles to choose from) and the browser lands in JupyterLab
    wait_for(lambda: in_jupyterlab(browser, user), timeout=180, what="JupyterLab")
    card = wait_for(lambda: find(browser, '.jp-LauncherCard[data-category="Notebook"]'), what="the launcher")
    card[0].click()
    wait_for(lambda: find(browser, ".jp-NotebookPanel"), what="a new notebook")
    wait_for_kernel(browser)
    assert run_cell(browser, f"USER = {user!r}; print(USER)") == user
    assert run_cell(browser, WRITE_FILE) == str(len(f"hello from {user}"))
    staff = user == "staff1"
    if staff:
        assert run_cell(browser, WRITE_ROW) == "row written"
    save_notebook(browser)
    old_container = docker_client.containers.get(f"{hub.prefix}-{user}").id

    stop_and_start_from_home(browser, hub, user)
    assert docker_client.containers.get(f"{hub.prefix}-{user}").id != old_container  # a new container
    open_notebook(browser, hub, user)
    assert run_cell(browser, f"USER = {user!r}; print(USER)") == user
    assert run_cell(browser, READ_FILE) == f"hello from {user}"
    if staff:
        assert run_cell(browser, READ_ROW) == "[('the row of staff1',)]"
    if user in PICTURES and UPDATE_PICTURES:
        take_picture(browser, PICTURES[user])
    hub.stop_server(user)
