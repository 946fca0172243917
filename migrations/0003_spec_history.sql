-- Registry schema, version 3: the last few specs each component's
-- containers were created from, for rollback.

CREATE TABLE spec_history (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT NOT NULL,
    component   TEXT NOT NULL,
    spec        TEXT NOT NULL,
    deployed_at INTEGER NOT NULL,
    FOREIGN KEY (service, component) REFERENCES components (service, name) ON DELETE CASCADE
);

CREATE INDEX spec_history_by_component ON spec_history (service, component, seq);
