-- Registry schema, version 4: deploys that survive a crash of the agent.

-- The spec an operation is moving the component to, recorded before its
-- container is replaced and cleared when the operation has recorded its
-- outcome. Still set at start-up: the agent died during that operation.
ALTER TABLE components ADD COLUMN pending_spec TEXT;
ALTER TABLE components ADD COLUMN pending_since INTEGER;

-- When the deployed spec last passed its checks (running, and healthy when
-- it has a health check); NULL: it has not (a deploy interrupted, or an
-- unhealthy component kept with --no-rollback). An unverified spec is never
-- "unchanged" to a deploy.
ALTER TABLE components ADD COLUMN verified_at INTEGER;
UPDATE components SET verified_at = deployed_at WHERE deployed_spec IS NOT NULL;
