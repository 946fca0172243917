-- Registry schema, version 8: the id of the image each component's
-- container was created from (`sha256:...`), so that a tag that now names
-- another image shows as a change, and image pruning knows what is in use.
ALTER TABLE components ADD COLUMN image_id TEXT;

-- Every image id an MCP container was created from, with the reference it
-- was deployed as: what `[images] prune` may remove once nothing refers to
-- it. Images MCP never ran (the operator's own) are never candidates.
CREATE TABLE images_used (
    image_id  TEXT PRIMARY KEY,
    reference TEXT NOT NULL,
    last_used INTEGER NOT NULL
);
