// deployhook's pages refresh themselves from the JSON endpoints. No framework, no
// build step: the server renders every page in full, this only keeps it current.
"use strict";

(function () {
  const REFRESH_MS = 3000;
  const JOB_REFRESH_MS = 2000;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child);
    }
    return node;
  }

  function ago(iso) {
    if (!iso) return "—";
    const delta = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
      if (delta >= size) return Math.floor(delta / size) + " " + unit + " ago";
    }
    return delta + " s ago";
  }

  function took(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const total = Math.round(seconds);
    if (total < 60) return seconds < 10 ? seconds.toFixed(1) + " s" : total + " s";
    const minutes = Math.floor(total / 60);
    if (minutes < 60) return minutes + " min " + (total % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function clock(iso) {
    return iso ? iso.slice(11, 19) + " UTC" : "—";
  }

  function pill(status) {
    return el("span", { class: "pill s-" + status, text: status.replace(/_/g, " ") });
  }

  function jobLink(id, text) {
    return el("a", { href: "/ui/jobs/" + id, text: text || "job " + id });
  }

  // The rollback that put the deployed commit back: the failed job and the rollback job.
  function rollbackLine(rb) {
    const line = el("span", { class: "rb" }, "rolled back ·");
    if (rb.failed_job) {
      line.append(" ", jobLink(rb.failed_job), " failed on ",
                  el("code", { text: (rb.failed_sha || "").slice(0, 10) }), " ·");
    }
    line.append(" ", jobLink(rb.job, "rollback job " + rb.job));
    if (!rb.failed_job) line.append(" by an admin");
    return line;
  }

  function none() {
    return el("span", { class: "none", text: "—" });
  }

  function timeEl(iso, text) {
    return el("time", { datetime: iso, text: text });
  }

  function setLive(text, ok) {
    const live = document.getElementById("live");
    if (!live) return;
    live.hidden = false;
    live.textContent = text;
    live.classList.toggle("stale", !ok);
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" },
                                        cache: "no-store" });
    if (!response.ok) throw new Error(url + ": HTTP " + response.status);
    return response.json();
  }

  // -- admin actions --------------------------------------------------------------
  // Buttons POST to the admin endpoints from this page (same origin: the browser's
  // Basic credentials go with them; a page of another site cannot, the server refuses
  // it) and say what happened in the page's status line.

  const ADMIN = () => document.body.dataset.admin === "yes";

  function actionButton(url, text, what, confirmText) {
    return el("button", { type: "button", class: "act", "data-url": url, "data-what": what,
                          "data-confirm": confirmText || null, text: text });
  }

  function repoActions(name, held) {
    const base = "/deploy/" + encodeURIComponent(name);
    return el("span", { class: "actions", "data-repo": name },
      actionButton(base + "/run", "Deploy", "deploy of " + name), " ",
      actionButton(base + "/rollback", "Rollback", "rollback of " + name,
                   "Roll " + name + " back to its previous good commit?"), " ",
      held ? actionButton(base + "/release", "Release", "release of " + name)
           : actionButton(base + "/hold", "Hold", "hold of " + name));
  }

  function say(parts, ok) {
    const box = document.getElementById("action-result");
    if (!box) return;
    box.hidden = false;
    box.classList.toggle("failed", !ok);
    box.replaceChildren(...parts);
  }

  async function act(button) {
    const what = button.dataset.what;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    try {
      const response = await fetch(button.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: "{}",
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        say([what + " refused (HTTP " + response.status + "): " + (body.error || "")], false);
        return;
      }
      const parts = [what + ": "];
      if (body.id) {
        parts.push((body.coalesced ? "joined " : "") + "job ", jobLink(body.id, "#" + body.id),
                   " " + body.status);
      } else {
        parts.push(body.held ? "held" : "released");
      }
      say(parts, true);
      document.dispatchEvent(new Event("deployhook:changed"));
    } catch (exc) {
      say([what + " failed: " + exc.message], false);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.act");
    if (button && button.dataset.url) act(button);
  });

  // -- the repo table -------------------------------------------------------------

  function repoRow(r) {
    const last = r.last_job;
    const name = el("a", { class: "name", href: "/ui/repos/" + encodeURIComponent(r.repo),
                           text: r.repo });
    const shown = r.running || (last && last.id);
    const status = el("td", { class: "c-status", "data-label": "Status" },
      shown ? el("a", { class: "state", href: "/ui/jobs/" + shown, title: "job " + shown },
                 pill(r.state))
            : pill(r.state));
    if (r.running && r.current_step) {
      status.append(" ", el("span", { class: "flag f-step", text: r.current_step }));
    }
    if (r.queued && r.state !== "queued") {
      status.append(" ", el("span", { class: "flag f-queued", text: "queued" }));
    }
    if (r.rolled_back && r.state !== "rolled_back") {
      status.append(" ", el("span", { class: "flag f-rolled", text: "rolled back" }));
    }
    if (r.held) status.append(" ", el("span", { class: "flag f-held", text: "held" }));

    let sha = none();
    if (r.deployed_sha) {
      const code = el("code", { text: r.deployed_sha.slice(0, 10) });
      sha = r.deployed_url
        ? el("a", { href: r.deployed_url, rel: "noopener noreferrer" }, code) : code;
    }
    return el("tr", { class: "repo-row", "data-repo": r.repo, "data-state": r.state },
      el("td", { class: "c-repo", "data-label": "Repo" }, name, " ",
         el("span", { class: "branch", text: r.branch })),
      status,
      el("td", { class: "c-sha", "data-label": "Deployed" }, sha),
      el("td", { class: "c-when", "data-label": "When" },
         r.when ? timeEl(r.when, ago(r.when)) : none()),
      el("td", { class: "c-took", "data-label": "Took",
                 text: took(last ? last.duration_s : null) }),
      el("td", { class: "c-error", "data-label": "Error" },
         (r.rolled_back || r.error) ? el("div", { class: "notes" },
           r.rolled_back ? rollbackLine(r.rolled_back) : null,
           r.error ? el("span", { class: "err", title: r.error, text: r.error }) : null)
         : null),
      ADMIN() ? el("td", { class: "c-actions", "data-label": "Actions" },
                   repoActions(r.repo, r.held)) : null);
  }

  let lastRender = null;

  function renderRepos(data) {
    const table = document.getElementById("repos");
    if (!table || !data.repos.length) {
      // The set of repos changed from or to empty: the page's layout differs.
      if ((!table) !== (!data.repos.length)) window.location.reload();
      return;
    }
    // Unchanged data leaves the DOM alone: no lost text selection, no hover flicker.
    const key = JSON.stringify([data.repos, data.registry_error]);
    if (key === lastRender) return;
    lastRender = key;
    table.tBodies[0].replaceChildren(...data.repos.map(repoRow));
    const notice = document.getElementById("registry-error");
    if (notice) {
      notice.hidden = !data.registry_error;
      notice.querySelector(".detail").textContent = data.registry_error || "";
    }
  }

  function nodeCard(n) {
    const workers = n.workers.map((w) => el("li", { "data-worker": w.id,
        class: w.alive ? "alive" : "stale" },
      el("code", { text: w.host + ":" + w.pid }),
      " · " + w.slots + (w.slots === 1 ? " slot" : " slots") + " · heartbeat ",
      timeEl(w.heartbeat_at, ago(w.heartbeat_at))));
    const repos = n.repos.length
      ? n.repos.length + (n.repos.length === 1 ? " repo: " : " repos: ") + n.repos.join(", ")
      : "no repos pinned here";
    return el("section", { class: "node", "data-node": n.node || "",
                           "data-alive": n.alive ? "yes" : "no" },
      el("h3", {}, n.node || "default node", " ",
         el("span", { class: "pill " + (n.alive ? "s-succeeded" : "s-failed"),
                      text: n.alive ? "up" : "no live worker" })),
      el("p", { class: "node-repos", text: repos }),
      el("ul", { class: "workers" }, ...workers));
  }

  let lastNodes = null;

  function renderNodes(data) {
    const box = document.getElementById("nodes");
    if (!box || !data.nodes.length) return;
    // Heartbeat ages change every beat: compare what the page shows, not the raw feed.
    const key = JSON.stringify(data.nodes.map((n) => [n.node, n.alive, n.repos,
      n.workers.map((w) => [w.id, w.alive, w.heartbeat_at])]));
    if (key === lastNodes) return;
    lastNodes = key;
    box.replaceChildren(...data.nodes.map(nodeCard));
  }

  function tickAges() {
    const ages = ".c-when time[datetime], .workers time[datetime], #repo time[datetime]";
    for (const node of document.querySelectorAll(ages)) {
      node.textContent = ago(node.getAttribute("datetime"));
    }
  }

  function startIndex() {
    const table = document.getElementById("repos");
    const feed = table ? table.dataset.feed : "/api/overview";
    async function refresh() {
      try {
        renderRepos(await getJSON(feed));
        if (document.getElementById("nodes")) renderNodes(await getJSON("/api/workers"));
        setLive("live", true);
      } catch (exc) {
        setLive("offline: retrying", false);
      }
      setTimeout(refresh, REFRESH_MS);
    }
    setTimeout(refresh, REFRESH_MS);
    document.addEventListener("deployhook:changed", () => { lastRender = null; });
    setInterval(tickAges, 1000);
    setLive("live", true);
  }

  // -- one repo -------------------------------------------------------------------

  // The server renders the repo page whole; this re-reads it and swaps it in when its
  // key (a digest of what it shows) changed.
  function startRepo() {
    async function refresh() {
      try {
        const response = await fetch(window.location.pathname,
          { headers: { Accept: "text/html" }, cache: "no-store" });
        if (!response.ok) throw new Error("HTTP " + response.status);
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById("repo");
        const shown = document.getElementById("repo");
        if (fresh && shown && fresh.dataset.key !== shown.dataset.key) {
          shown.replaceWith(document.importNode(fresh, true));
          tickAges();
        }
        setLive("live", true);
      } catch (exc) {
        setLive("offline: retrying", false);
      }
      setTimeout(refresh, REFRESH_MS);
    }
    setTimeout(refresh, REFRESH_MS);
    setInterval(tickAges, 1000);
    setLive("live", true);
  }

  // -- one job --------------------------------------------------------------------

  const ENDED = new Set(["succeeded", "failed", "cancelled", "interrupted", "skipped"]);

  let lastJob = null;

  function renderJob(job) {
    const key = JSON.stringify(job);
    if (key === lastJob) return;
    lastJob = key;
    const article = document.getElementById("job");
    article.dataset.status = job.status;
    document.getElementById("job-status").replaceChildren(pill(job.status));
    const error = document.getElementById("job-error");
    error.hidden = !job.error;
    error.textContent = job.error || "";
    const rollback = document.getElementById("job-rollback");
    if (rollback) {
      rollback.hidden = !(job.rollback_of || job.rolled_back_by);
      rollback.replaceChildren();
      if (job.rollback_of) rollback.append("rollback of ", jobLink(job.rollback_of), ", which failed");
      if (job.rolled_back_by) rollback.append("rolled back by ", jobLink(job.rolled_back_by));
    }
    document.getElementById("job-started").replaceChildren(
      job.started_at ? timeEl(job.started_at, clock(job.started_at)) : "—");
    document.getElementById("job-took").textContent = took(job.duration_s);
    document.getElementById("job-previous").replaceChildren(
      job.previous_sha ? el("code", { text: job.previous_sha.slice(0, 12) }) : "—");
    const rows = job.steps.map((s) => {
      const started = s.started_at ? timeEl(s.started_at, clock(s.started_at)) : "—";
      const span = s.started_at && s.finished_at
        ? (Date.parse(s.finished_at) - Date.parse(s.started_at)) / 1000 : null;
      return el("tr", { "data-step": s.name },
        el("td", { class: "c-step", "data-label": "Step", text: s.name }),
        el("td", { "data-label": "Status" }, pill(s.status)),
        el("td", { "data-label": "Started" }, started),
        el("td", { "data-label": "Took", text: took(span) }),
        el("td", { class: "c-error", "data-label": "Error" },
           s.error ? el("span", { class: "err", text: s.error }) : null));
    });
    if (rows.length) document.querySelector("#steps tbody").replaceChildren(...rows);
  }

  async function followLog(url) {
    const pre = document.getElementById("log");
    const state = document.getElementById("log-state");
    let pending = "";
    let count = 0;
    function addLines(text) {
      pending += text;
      const lines = pending.split("\n");
      pending = lines.pop();
      const stick = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
      const frag = document.createDocumentFragment();
      for (const line of lines) {
        const space = line.indexOf(" ");
        const row = el("span", { class: "line" });
        if (space > 0) {
          row.append(el("span", { class: "ts", text: line.slice(11, 23) }),
                     line.slice(space));
        } else {
          row.append(line);
        }
        frag.append(row, "\n");
        count += 1;
      }
      pre.append(frag);
      if (stick) pre.scrollTop = pre.scrollHeight;
    }
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (!response.ok) {
        state.textContent = "output unavailable (HTTP " + response.status + ")";
        return;
      }
      state.textContent = "following…";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        addLines(decoder.decode(value, { stream: true }));
      }
      addLines(decoder.decode() + (pending ? "\n" : ""));
      state.textContent = count ? "end of output (" + count + " lines)" : "no output";
      pre.dataset.done = "1";
    } catch (exc) {
      state.textContent = "connection lost: reload to continue";
    }
  }

  function startJob() {
    const article = document.getElementById("job");
    // A failed deploy's rollback is queued just after it ends: look a little longer.
    let rollbackPolls = 5;
    async function refresh() {
      try {
        const job = await getJSON(article.dataset.feed);
        renderJob(job);
        setLive(ENDED.has(job.status) ? "ended" : "live", true);
        const awaitRollback = job.status === "failed" && !job.rolled_back_by &&
          rollbackPolls-- > 0;
        if (ENDED.has(job.status) && !awaitRollback) return;
      } catch (exc) {
        setLive("offline: retrying", false);
      }
      setTimeout(refresh, JOB_REFRESH_MS);
    }
    if (!ENDED.has(article.dataset.status)) {
      setLive("live", true);
      setTimeout(refresh, JOB_REFRESH_MS);
    }
    if (article.dataset.log) followLog(article.dataset.log);
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (document.body.classList.contains("page-index")) startIndex();
    if (document.body.classList.contains("page-job")) startJob();
    if (document.body.classList.contains("page-repo")) startRepo();
  });
})();
