"""The versioned schema: an ordered list of migrations, shared by every backend.

A migration is SQL text in which `{id}` and `{real}` stand for the backend's
auto-increment primary key and floating-point types. Never edit a released migration:
append a new one.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the ledger, the queue, job steps and output, per-repo state, workers.
    """
    CREATE TABLE repo_state (
        repo TEXT PRIMARY KEY,
        held INTEGER NOT NULL DEFAULT 0,
        held_at {real},
        held_sha TEXT,
        held_ref TEXT,
        held_delivery TEXT,
        seen_head TEXT,
        seen_at {real},
        repo_url TEXT,
        problem TEXT
    );
    CREATE TABLE jobs (
        id {id},
        repo TEXT NOT NULL,
        status TEXT NOT NULL,
        trigger TEXT NOT NULL,
        sha TEXT NOT NULL,
        ref TEXT,
        delivery TEXT,
        previous_sha TEXT,
        created_at {real} NOT NULL,
        started_at {real},
        finished_at {real},
        error TEXT,
        worker TEXT,
        node TEXT NOT NULL DEFAULT '',
        lease_until {real},
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        repo_url TEXT,
        pgid INTEGER,
        host TEXT
    );
    CREATE UNIQUE INDEX jobs_one_queued_per_repo ON jobs (repo) WHERE status = 'queued';
    CREATE UNIQUE INDEX jobs_one_running_per_repo ON jobs (repo) WHERE status = 'running';
    CREATE INDEX jobs_by_repo ON jobs (repo, id);
    CREATE INDEX jobs_by_status ON jobs (status, id);
    CREATE TABLE job_steps (
        job_id INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at {real},
        finished_at {real},
        error TEXT,
        PRIMARY KEY (job_id, idx)
    );
    CREATE TABLE job_log (
        id {id},
        job_id INTEGER NOT NULL,
        ts {real} NOT NULL,
        line TEXT NOT NULL
    );
    CREATE INDEX job_log_by_job ON job_log (job_id, id);
    CREATE TABLE deliveries (
        id {id},
        repo TEXT NOT NULL,
        delivery_id TEXT,
        event TEXT,
        received_at {real} NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT,
        job_id INTEGER,
        http_status INTEGER NOT NULL,
        answer TEXT,
        sha TEXT,
        ref TEXT
    );
    CREATE INDEX deliveries_by_repo ON deliveries (repo, id);
    CREATE INDEX deliveries_by_delivery_id ON deliveries (repo, delivery_id)
        WHERE delivery_id IS NOT NULL;
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        node TEXT NOT NULL DEFAULT '',
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        slots INTEGER NOT NULL,
        started_at {real} NOT NULL,
        heartbeat_at {real} NOT NULL,
        stopped_at {real}
    );
    """,
    # 2: what pruning removed, by metric and label, so /metrics counters (rows still kept
    # plus rows pruned) never go backwards.
    """
    CREATE TABLE pruned_totals (
        metric TEXT NOT NULL,
        repo TEXT NOT NULL,
        label TEXT NOT NULL,
        value {real} NOT NULL DEFAULT 0,
        PRIMARY KEY (metric, repo, label)
    );
    """,
    # 3: a job's note (why it was skipped, or which pushed commit it superseded), and
    # the job a retry retries.
    """
    ALTER TABLE jobs ADD COLUMN note TEXT;
    ALTER TABLE jobs ADD COLUMN retry_of INTEGER;
    """,
    # 4: a rollback job names the failed job it rolls back from, so each links to the other.
    """
    ALTER TABLE jobs ADD COLUMN rollback_of INTEGER;
    CREATE INDEX jobs_by_rollback_of ON jobs (rollback_of) WHERE rollback_of IS NOT NULL;
    """,
    # 5: how many file descriptors each worker has open, and its limit (/healthz warns
    # before a worker runs out).
    """
    ALTER TABLE workers ADD COLUMN fds INTEGER;
    ALTER TABLE workers ADD COLUMN fd_limit INTEGER;
    """,
    # 6: the ledger under hostile traffic. Deliveries to names not in the registry are
    # marked (pruned together, as they arrive); rejected deliveries are stored up to a
    # number a minute per repo (or for unknown names together), the rest only counted.
    """
    ALTER TABLE deliveries ADD COLUMN stranger INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX deliveries_of_strangers ON deliveries (id) WHERE stranger = 1;
    CREATE TABLE rejected_minutes (
        scope TEXT PRIMARY KEY,
        minute INTEGER NOT NULL,
        stored INTEGER NOT NULL DEFAULT 0,
        left_out INTEGER NOT NULL DEFAULT 0,
        summary_id INTEGER
    );
    """,
)
