CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    system_id TEXT NOT NULL,
    project_id TEXT REFERENCES projects (id),
    title TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    priority INTEGER DEFAULT 0,
    payload TEXT,
    updated_at TEXT
);
