-- Registry schema, version 2: drift and unmanaged containers (the watch).

-- When a managed component's observed state began to differ from its desired
-- state; NULL when it does not.
ALTER TABLE components ADD COLUMN drift_since INTEGER;
ALTER TABLE components ADD COLUMN drift_detail TEXT;

CREATE INDEX components_by_container ON components (container_id);

-- Containers on the node that no service claims. Their desired state is
-- always 'ignore': shown, never alerted on, never touched. `mcp adopt` moves
-- one into `components` with desired state 'running'.
CREATE TABLE unmanaged_containers (
    container_id   TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    image          TEXT NOT NULL DEFAULT '',
    desired_state  TEXT NOT NULL DEFAULT 'ignore' CHECK (desired_state = 'ignore'),
    observed_state TEXT NOT NULL,
    first_seen     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL
);

CREATE INDEX unmanaged_by_name ON unmanaged_containers (name);
