-- Registry schema, version 5: who caused each event. The account's name
-- (MCIAS username, else subject; `local-operator` in local mode) for what an
-- operator asked for, `mcp-agent` for what the agent did on its own, and
-- empty for what it only observed (a container died).
ALTER TABLE events ADD COLUMN actor TEXT NOT NULL DEFAULT '';
CREATE INDEX events_by_actor ON events (actor, id);
