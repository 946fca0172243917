-- Registry schema, version 1. Times are Unix milliseconds.

CREATE TABLE services (
    name        TEXT PRIMARY KEY,
    -- `active` of the last pushed definition.
    active      INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE components (
    service        TEXT NOT NULL REFERENCES services(name) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    desired_state  TEXT NOT NULL DEFAULT 'running'
                   CHECK (desired_state IN ('running', 'stopped', 'ignore')),
    -- Last state seen in the runtime: running, exited, created, paused, absent, unknown, ...
    observed_state TEXT NOT NULL DEFAULT 'unknown',
    -- The container that currently holds this component, if any.
    container_id   TEXT,
    -- Image and restart policy of the deployed spec (columns for queries; the
    -- whole spec is in deployed_spec).
    image          TEXT,
    restart        TEXT CHECK (restart IN ('no', 'on-failure', 'always', 'unless-stopped')),
    -- Last definition pushed by the operator (JSON), deployed or not.
    spec           TEXT NOT NULL,
    -- Definition the current container was created from (JSON); NULL when no
    -- container exists.
    deployed_spec  TEXT,
    deployed_at    INTEGER,
    observed_at    INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (service, name)
);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts         INTEGER NOT NULL,
    node       TEXT NOT NULL,
    service    TEXT NOT NULL,
    component  TEXT NOT NULL DEFAULT '',
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT ''
);

CREATE INDEX events_by_service ON events (service, ts);
