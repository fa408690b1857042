"""The status page in a real headless Chromium: rendered DOM after scripts ran, the
self-update without reload, the live log for an admin, and screenshots to look at."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.models import Status, StepStatus, Trigger
from deployhook.service import Service
from tests.conftest import write_registry
from tests.server import Served, live_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Read at import: the autouse fixture clears DEPLOYHOOK_* before each test runs.
REQUIRE = os.environ.get("DEPLOYHOOK_REQUIRE_BROWSER") == "1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "browser-admin-token"
FORGE = "https://git.example.com/jeff"

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the test extra installs it
    webdriver = None  # type: ignore[assignment]


def _browser_missing() -> str | None:
    if webdriver is None:
        return "selenium is not installed"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} not found"
    return None


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if REQUIRE:
            pytest.fail(f"DEPLOYHOOK_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
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
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER), options=options)
    chrome.set_page_load_timeout(30)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def world(
    tmp_path: Path, settings: Settings, open_service: Any
) -> tuple[Settings, Service, dict[str, int]]:
    """Four repos in four states, straight in the store, as a worker would leave them."""
    registry = write_registry(
        tmp_path / "browser-repos.yml",
        {
            "mycofi-earth-website": {"path": str(tmp_path / "co" / "site")},
            "api": {"path": str(tmp_path / "co" / "api"), "branch": "production"},
            "blog": {"path": str(tmp_path / "co" / "blog")},
            "docs": {"path": str(tmp_path / "co" / "docs")},
        },
    )
    import dataclasses

    settings = dataclasses.replace(settings, registry=registry, admin_token=TOKEN)
    svc = open_service(settings)
    store = svc.store
    ids: dict[str, int] = {}

    def run(
        repo: str,
        sha: str,
        status: Status | None,
        *,
        error: str | None = None,
        steps: tuple[str, ...] = ("fetch", "checkout", "compose"),
    ) -> int:
        job, _ = store.enqueue(
            repo=repo,
            sha=sha,
            ref="refs/heads/main",
            trigger=Trigger.PUSH,
            node="",
            repo_url=f"{FORGE}/{repo}",
        )
        store.claim(worker="browser-test", node="", lease_s=600)
        for i, name in enumerate(steps):
            idx = store.start_step(job.id, name)
            store.append_log(job.id, [(time.time(), f"==> {name}")])
            last = i == len(steps) - 1
            if status is None and last:
                break  # still running
            failed = status == Status.FAILED and last
            store.finish_step(
                job.id,
                idx,
                status=StepStatus.FAILED if failed else StepStatus.SUCCEEDED,
                error=error if failed else None,
            )
        if status is not None:
            store.finish(job.id, status=status, error=error)
        return job.id

    ids["site"] = run("mycofi-earth-website", "1f2e3d4c5b6a" + "0" * 28, Status.SUCCEEDED)
    run("api", "a1" * 20, Status.SUCCEEDED)
    ids["api"] = run(
        "api",
        "b2" * 20,
        Status.FAILED,
        error="compose up exited with 1: service web: port 8080 already in use",
    )
    store.hold("api")
    run("blog", "c3" * 20, Status.SUCCEEDED)
    ids["blog"] = run("blog", "d4" * 20, None)
    return settings, svc, ids


@pytest.fixture
def server(world: tuple[Settings, Service, dict[str, int]], tmp_path: Path) -> Iterator[Served]:
    with live_server(world[0], tmp=tmp_path) as srv:
        yield srv


SNAPSHOT = """
const rows = {};
for (const tr of document.querySelectorAll("tr.repo-row")) {
  const q = (sel) => tr.querySelector(sel);
  const link = q(".c-sha a");
  rows[tr.dataset.repo] = {
    pill: q(".c-status .pill").textContent, status: q(".c-status").innerText,
    sha: q(".c-sha").innerText.trim(), href: link ? link.href : null,
    when: q(".c-when").innerText.trim(), error: q(".c-error").innerText.trim(),
    errorShown: q(".c-error").getBoundingClientRect().height > 0,
  };
}
return {order: Array.from(document.querySelectorAll("tr.repo-row"), (r) => r.dataset.repo),
        rows: rows};
"""


def snapshot(driver: Any) -> dict[str, Any]:
    """The repo table as rendered now, read in one go (it may be re-rendered any time)."""
    return driver.execute_script(SNAPSHOT)  # type: ignore[no-any-return]


def pill(driver: Any, repo: str) -> str:
    return str(snapshot(driver)["rows"][repo]["pill"])


def text(driver: Any, selector: str) -> str:
    """An element's text, read in the page (the scripts replace elements as they refresh)."""
    return str(
        driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
            selector,
        )
    )


def wait(driver: Any, condition: Any, timeout: float = 15) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def no_console_errors(driver: Any) -> None:
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def phone(driver: Any) -> None:
    driver.set_window_size(390, 844)
    time.sleep(0.3)  # let layout settle after the resize
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth"
    )
    assert overflow <= 0, f"page scrolls sideways on a phone by {overflow}px"


def test_status_page_renders_and_updates_itself(
    driver: Any, server: Served, world: Any, tmp_path: Path
) -> None:
    _, svc, ids = world
    driver.get(server.url + "/")
    wait(driver, lambda d: d.find_element(By.ID, "live").is_displayed())
    page = snapshot(driver)
    assert page["order"] == ["api", "blog", "docs", "mycofi-earth-website"]
    rows = page["rows"]
    assert {name: r["pill"] for name, r in rows.items()} == {
        "mycofi-earth-website": "succeeded",
        "api": "failed",
        "blog": "running",
        "docs": "never",
    }
    site = rows["mycofi-earth-website"]
    assert site["href"] == f"{FORGE}/mycofi-earth-website/commit/1f2e3d4c5b6a{'0' * 28}"
    assert site["sha"] == "1f2e3d4c5b"
    assert site["when"].endswith(" ago")
    assert "held" in rows["api"]["status"]
    assert "port 8080 already in use" in rows["api"]["error"]
    assert rows["api"]["sha"] == "a1" * 5  # what is deployed: the last good one
    assert "compose" in rows["blog"]["status"]  # the running step
    assert rows["docs"]["when"] == "—"
    assert "no live worker" in (text(driver, "#nodes") or "")
    driver.save_screenshot(str(tmp_path / "status-desktop.png"))

    # The self-update: the running job ends in the store; the page follows without reload.
    driver.execute_script("window.__notReloaded = true")
    svc.store.finish(ids["blog"], status=Status.SUCCEEDED, error=None)
    wait(driver, lambda d: pill(d, "blog") == "succeeded")
    assert driver.execute_script("return window.__notReloaded") is True
    assert snapshot(driver)["rows"]["blog"]["sha"] == "d4" * 5
    # A push queues a job: the row says so on the next refresh.
    svc.store.enqueue(
        repo="docs", sha="e5" * 20, ref="refs/heads/main", trigger=Trigger.PUSH, node=""
    )
    wait(driver, lambda d: pill(d, "docs") == "queued")
    assert driver.execute_script("return window.__notReloaded") is True
    # A worker starts on the default node: the workers section shows it, with its beat.
    svc.store.register_worker(worker="deploy-box:4242:abc", node="", slots=2)
    shown = f"{socket.gethostname()}:{os.getpid()}"  # host:pid of the worker's process
    wait(driver, lambda d: shown in (text(d, "#nodes") or ""))
    assert "up" in text(driver, '#nodes .node[data-node=""] .pill')
    assert driver.execute_script("return window.__notReloaded") is True
    no_console_errors(driver)

    phone(driver)
    driver.save_screenshot(str(tmp_path / "status-phone.png"))
    assert snapshot(driver)["rows"]["api"]["errorShown"]
    print(f"screenshots: {tmp_path}")


def test_job_page_follows_the_log_for_an_admin(
    driver: Any, server: Served, world: Any, tmp_path: Path
) -> None:
    _, svc, ids = world
    job_id = ids["blog"]
    driver.get(f"{server.url}/ui/jobs/{job_id}")
    assert driver.find_elements(By.ID, "log") == []  # not an admin yet
    login = driver.find_element(By.CSS_SELECTOR, ".log-locked a")
    assert login.get_attribute("href").endswith(f"/login?next=/ui/jobs/{job_id}")

    # After the Basic prompt of /login, the browser sends the credentials with every
    # request to the site (the prompt itself cannot be answered in headless Chromium).
    basic = base64.b64encode(f"admin:{TOKEN}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {basic}"}}
    )
    driver.get(f"{server.url}/login?next=/ui/jobs/{job_id}")
    wait(driver, lambda d: d.find_elements(By.ID, "log"))
    assert driver.current_url == f"{server.url}/ui/jobs/{job_id}"
    assert text(driver, ".top .who") == "admin"
    log = driver.find_element(By.ID, "log")
    wait(driver, lambda d: "==> compose" in log.text)
    steps = driver.execute_script(
        'return Array.from(document.querySelectorAll("#steps tbody tr"), r => r.dataset.step)'
    )
    assert steps == ["fetch", "checkout", "compose"]

    svc.store.append_log(job_id, [(time.time(), "Container blog-web-1  Started")])
    wait(driver, lambda d: "Container blog-web-1  Started" in log.text)
    assert text(driver, "#job-status .pill") == "running"
    driver.save_screenshot(str(tmp_path / "job-running-desktop.png"))

    with svc.store.write() as tx:  # the worker's last moves: the step, then the job
        tx.run(
            "UPDATE job_steps SET status = 'succeeded', finished_at = :now"
            " WHERE job_id = :id AND status = 'running'",
            now=time.time(),
            id=job_id,
        )
    svc.store.append_log(job_id, [(time.time(), "==> job succeeded")])
    svc.store.finish(job_id, status=Status.SUCCEEDED, error=None)
    wait(driver, lambda d: d.find_element(By.ID, "log").get_attribute("data-done") == "1")
    assert "end of output" in driver.find_element(By.ID, "log-state").text
    wait(driver, lambda d: text(d, "#job-status .pill") == "succeeded")
    statuses = driver.execute_script(
        'return Array.from(document.querySelectorAll("#steps .pill"), p => p.textContent)'
    )
    assert statuses == ["succeeded"] * 3
    no_console_errors(driver)
    driver.save_screenshot(str(tmp_path / "job-desktop.png"))
    phone(driver)
    driver.save_screenshot(str(tmp_path / "job-phone.png"))
    print(f"screenshots: {tmp_path}")
