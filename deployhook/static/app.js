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
    return el("span", { class: "pill s-" + status, text: status });
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

  // -- the repo table -------------------------------------------------------------

  function repoRow(r) {
    const last = r.last_job;
    const name = last
      ? el("a", { class: "name", href: "/ui/jobs/" + last.id, text: r.repo })
      : el("span", { class: "name", text: r.repo });
    const status = el("td", { class: "c-status", "data-label": "Status" }, pill(r.status));
    if (r.running && (!last || r.running !== last.id)) {
      status.append(" ", el("a", { class: "flag f-running", href: "/ui/jobs/" + r.running,
        text: "running" + (r.current_step ? " · " + r.current_step : "") }));
    } else if (r.running && r.current_step) {
      status.append(" ", el("span", { class: "flag f-step", text: r.current_step }));
    }
    if (r.queued && r.status !== "queued") {
      status.append(" ", el("span", { class: "flag f-queued", text: "queued" }));
    }
    if (r.held) status.append(" ", el("span", { class: "flag f-held", text: "held" }));

    let sha = none();
    if (r.deployed_sha) {
      const code = el("code", { text: r.deployed_sha.slice(0, 10) });
      sha = r.deployed_url
        ? el("a", { href: r.deployed_url, rel: "noopener noreferrer" }, code) : code;
    }
    const err = r.problem || (last && last.error);
    return el("tr", { class: "repo-row", "data-repo": r.repo, "data-status": r.status },
      el("td", { class: "c-repo", "data-label": "Repo" }, name, " ",
         el("span", { class: "branch", text: r.branch })),
      status,
      el("td", { class: "c-sha", "data-label": "Deployed" }, sha),
      el("td", { class: "c-when", "data-label": "When" },
         r.when ? timeEl(r.when, ago(r.when)) : none()),
      el("td", { class: "c-took", "data-label": "Took",
                 text: took(last ? last.duration_s : null) }),
      el("td", { class: "c-error", "data-label": "Error" },
         err ? el("span", { class: "err", title: err, text: err }) : null));
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
    for (const node of document.querySelectorAll(".c-when time[datetime], .workers time[datetime]")) {
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
    async function refresh() {
      try {
        const job = await getJSON(article.dataset.feed);
        renderJob(job);
        setLive(ENDED.has(job.status) ? "ended" : "live", true);
        if (ENDED.has(job.status)) return;
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
  });
})();
