CREATE TABLE results (
    id TEXT PRIMARY KEY,
    system_id TEXT NOT NULL,
    task_id TEXT NOT NULL REFERENCES tasks (id),
    output TEXT,
    exit_code INTEGER,
    created_at TEXT
);
