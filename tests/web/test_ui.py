"""The status page in a real headless Chromium: rendered DOM after scripts ran, the
self-update without reload, the live log for an admin, and screenshots to look at."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status, StepStatus, Trigger
from deployhook.service import Service
from tests import needs
from tests.conftest import write_registry
from tests.helpers import gitea_headers, gitea_push_body
from tests.server import Served, live_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

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
        return "selenium is not installed (`pip install -e '.[test]'`)"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} not found"
    return None


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    why = _browser_missing()
    if why:
        needs.missing("browser", why)
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


def full_page(driver: Any, path: Path) -> None:
    """A screenshot of the whole page, below the fold too (Chromium's DevTools protocol)."""
    height = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]["height"]
    # The window's width, scroll bar included: drawn whole, the page needs none.
    width = driver.execute_script("return window.innerWidth")
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))


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


def _deliver(url: str, sha: str) -> int:
    """A signed Gitea push to the live server, as Gitea sends it; returns its job id."""
    import json
    import urllib.request

    body = gitea_push_body(sha=sha, full_name="jeff/site")
    request = urllib.request.Request(
        f"{url}/deploy/site", data=body, headers=gitea_headers(body), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 202
        return int(json.loads(answer.read())["job"])


ROW = """
const tr = document.querySelector('tr.repo-row[data-repo="site"]');
if (!tr) return null;
return {state: tr.dataset.state, pill: tr.querySelector(".c-status .pill").textContent,
        error: tr.querySelector(".c-error").innerText,
        links: Array.from(tr.querySelectorAll(".c-error a"), (a) => a.getAttribute("href"))};
"""


def test_a_rollback_stays_visible_until_a_good_push(
    driver: Any,
    settings: Settings,
    open_service: Any,
    remote: Any,
    fake_docker: Any,
    tmp_path: Path,
) -> None:
    """Real git, the worker in burst mode, a compose that fails for one commit."""
    svc = open_service(settings)
    shots = tmp_path / "shots"
    shots.mkdir()
    with live_server(settings, tmp=tmp_path) as srv:
        _deliver(srv.url, remote.commit_and_push({"index.html": "good\n"}))
        Worker(svc).work(burst=True)
        good = remote.deployed()
        bad = remote.commit_and_push({"index.html": "broken\n"})
        fake_docker.set(fail_sha=bad)
        failed = _deliver(srv.url, bad)
        Worker(svc).work(burst=True)
        rollback = svc.store.job(failed).rolled_back_by
        assert rollback is not None and remote.deployed() == good

        driver.get(srv.url + "/")
        wait(driver, lambda d: d.find_element(By.ID, "live").is_displayed())
        row = driver.execute_script(ROW)
        assert (row["state"], row["pill"]) == ("rolled_back", "rolled back")
        assert "compose up exited with 1" in row["error"]
        assert f"job {failed} failed on {bad[:10]}" in row["error"]
        assert row["links"] == [f"/ui/jobs/{failed}", f"/ui/jobs/{rollback}"]
        assert snapshot(driver)["rows"]["site"]["sha"] == good[:10]  # what runs now
        driver.save_screenshot(str(shots / "index-rolled-back.png"))
        phone(driver)
        assert driver.execute_script(ROW)["links"] == row["links"]
        driver.save_screenshot(str(shots / "index-rolled-back-phone.png"))
        driver.set_window_size(1280, 800)

        # The failed job links to its rollback, and back.
        driver.find_element(By.CSS_SELECTOR, f'.c-error a[href="/ui/jobs/{failed}"]').click()
        wait(driver, lambda d: d.current_url.endswith(f"/ui/jobs/{failed}"))
        assert text(driver, "#job-rollback").strip() == f"rolled back by job {rollback}"
        assert "compose up exited with 1" in text(driver, "#job-error")
        driver.find_element(By.CSS_SELECTOR, f'#job-rollback a[href="/ui/jobs/{rollback}"]').click()
        wait(driver, lambda d: d.current_url.endswith(f"/ui/jobs/{rollback}"))
        assert text(driver, "#job-rollback").strip() == f"rollback of job {failed}, which failed"
        assert text(driver, "#job-status .pill") == "succeeded"

        # The repo page: the state, both jobs, the ledger; at desktop and phone width.
        driver.find_element(By.CSS_SELECTOR, '.crumbs a[href="/ui/repos/site"]').click()
        wait(driver, lambda d: d.find_elements(By.ID, "rolled-back"))
        assert text(driver, "#repo h1 .pill") == "rolled back"
        section = text(driver, "#rolled-back")
        for fact in (f"job {failed}", bad[:10], "compose up exited with 1", good[:10]):
            assert fact in section, fact
        jobs = driver.execute_script(
            'return Array.from(document.querySelectorAll("#jobs tbody tr"),'
            " (r) => [r.dataset.job, r.querySelector('.c-error').innerText])"
        )
        assert [j[0] for j in jobs] == [str(rollback), str(failed), str(failed - 1)]
        assert f"rollback of job {failed}" in jobs[0][1]
        assert f"rolled back by job {rollback}" in jobs[1][1]
        outcomes = driver.execute_script(
            'return Array.from(document.querySelectorAll("#deliveries tbody tr"),'
            " (r) => r.dataset.outcome)"
        )
        assert outcomes == ["queued", "queued"]
        driver.set_window_size(1280, 800)
        time.sleep(0.3)
        driver.save_screenshot(str(shots / "repo-desktop.png"))
        full_page(driver, shots / "repo-desktop-full.png")
        phone(driver)
        driver.save_screenshot(str(shots / "repo-phone.png"))
        full_page(driver, shots / "repo-phone-full.png")
        no_console_errors(driver)

        # The badge says so too, in the warning colour.
        with urllib_get(f"{srv.url}/deploy/site/badge.svg") as svg:
            assert ">rolled back</text>" in svg and "#fe7d37" in svg

        # A later good push clears it; the page follows without a reload.
        driver.set_window_size(1280, 800)
        driver.get(srv.url + "/")
        wait(driver, lambda d: d.execute_script(ROW) is not None)
        driver.execute_script("window.__notReloaded = true")
        fake_docker.set()
        fixed = remote.commit_and_push({"index.html": "fixed\n"})
        _deliver(srv.url, fixed)
        Worker(svc).work(burst=True)
        wait(driver, lambda d: d.execute_script(ROW)["state"] == "succeeded")
        row = driver.execute_script(ROW)
        assert (row["pill"], row["error"].strip(), row["links"]) == ("succeeded", "", [])
        assert snapshot(driver)["rows"]["site"]["sha"] == fixed[:10]
        assert driver.execute_script("return window.__notReloaded") is True
        with urllib_get(f"{srv.url}/deploy/site/badge.svg") as svg:
            assert ">succeeded</text>" in svg
        no_console_errors(driver)
    print(f"screenshots: {shots}")


@contextlib.contextmanager
def urllib_get(url: str) -> Iterator[str]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as answer:
        yield answer.read().decode()


# -- admin buttons, and the same actions from another site (trust finding 2) -------------

ATTACK = """<!doctype html><html><body>
<p>cat pictures</p>
{forms}
<script>
for (const form of document.forms) form.submit();
for (const url of {urls}) {{
  fetch(url, {{method: "POST", credentials: "include", mode: "no-cors"}});
  fetch(url, {{method: "POST", credentials: "include", mode: "no-cors",
              headers: {{"Content-Type": "text/plain"}}, body: "{{}}"}});
}}
document.title = "sent";
</script></body></html>"""


class _Attacker:
    """Another origin (a second loopback port) serving one page that posts to deployhook."""

    def __init__(self, page: str) -> None:
        import http.server
        import threading

        body = page.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _state(svc: Service, job_id: int) -> tuple[Any, ...]:
    job = svc.store.job(job_id)
    jobs = svc.store.jobs("site", limit=100)
    return (job.status, job.sha, job.trigger, len(jobs), svc.store.repo_state("site").held)


def test_admin_buttons_work_and_another_site_changes_nothing(
    driver: Any,
    settings: Settings,
    open_service: Any,
    remote: Any,
    tmp_path: Path,
) -> None:
    import dataclasses

    settings = dataclasses.replace(settings, admin_token=TOKEN)
    svc = open_service(settings)
    store = svc.store
    shas = [remote.commit_and_push({"index.html": f"v{n}\n"}) for n in (2, 3)]
    for sha in shas:  # two good deploys: a rollback has somewhere to go
        job, _ = store.enqueue(
            repo="site", sha=sha, ref="refs/heads/main", trigger=Trigger.PUSH, node=""
        )
        store.claim(worker="browser-test", node="", lease_s=600)
        store.finish(job.id, status=Status.SUCCEEDED, error=None)
    queued, _ = store.enqueue(
        repo="site", sha=shas[0], ref="refs/heads/main", trigger=Trigger.MANUAL, node=""
    )
    basic = base64.b64encode(f"admin:{TOKEN}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    # As after logging in: the browser sends the credentials with every request to the
    # site, whichever page makes it (that is what a cross-site request rides on).
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {basic}"}}
    )
    with live_server(settings, tmp=tmp_path) as srv:
        endpoints = [f"/deploy/site/{a}" for a in ("hold", "release", "run", "rollback")]
        endpoints.append(f"/jobs/{queued.id}/cancel")
        forms = "\n".join(
            f'<iframe name="f{n}" hidden></iframe>'
            f'<form method="post" target="f{n}" action="{srv.url}{path}"></form>'
            for n, path in enumerate(endpoints)
        )
        page = ATTACK.format(forms=forms, urls=[srv.url + p for p in endpoints])
        before = _state(svc, queued.id)
        attacker = _Attacker(page)
        try:
            driver.get(attacker.url)
            wait(driver, lambda d: d.title == "sent")
            time.sleep(1.5)  # the forms' and fetches' requests land
        finally:
            attacker.close()
        assert _state(svc, queued.id) == before  # nothing changed: not held, not cancelled
        # The page cannot read the answers; its console saw each of them refused.
        seen = [e["message"] for e in driver.get_log("browser")]
        for path in endpoints:
            assert any(path in m and "403" in m for m in seen), (path, seen)

        # The same actions from deployhook's own pages, with the same credentials: work.
        driver.get(srv.url + "/")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "tr.repo-row .actions"))
        assert text(driver, ".top .who") == "admin"
        driver.find_element(By.CSS_SELECTOR, 'tr.repo-row button[data-url$="/hold"]').click()
        wait(driver, lambda d: "hold of site: held" in text(d, "#action-result"))
        assert store.repo_state("site").held
        wait(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, 'tr.repo-row button[data-url$="/release"]'),
        )
        driver.find_element(By.CSS_SELECTOR, 'tr.repo-row button[data-url$="/release"]').click()
        wait(driver, lambda d: "release of site: released" in text(d, "#action-result"))
        assert not store.repo_state("site").held
        driver.find_element(By.CSS_SELECTOR, 'tr.repo-row button[data-url$="/run"]').click()
        joined = f"deploy of site: joined job #{queued.id}"
        wait(driver, lambda d: joined in text(d, "#action-result"))
        assert store.job(queued.id).sha == shas[1]  # the remote head, by the button

        driver.get(f"{srv.url}/ui/jobs/{queued.id}")
        driver.execute_script("window.confirm = () => true")
        driver.find_element(By.ID, "cancel").click()
        wait(
            driver,
            lambda d: (
                f"cancel of job {queued.id}: job #{queued.id} cancelled"
                in text(d, "#action-result")
            ),
        )
        assert store.job(queued.id).status == Status.CANCELLED
        driver.save_screenshot(str(tmp_path / "job-cancelled-admin.png"))
        no_console_errors(driver)
