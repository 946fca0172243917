-- Registry schema, version 6: what the agent needs to heal a node on its own.

-- A service's own `reconcile` setting; NULL: the agent's default.
ALTER TABLE services ADD COLUMN reconcile INTEGER;

-- The last health the agent's probes saw while the container ran
-- ('healthy' or 'unhealthy'), since when and why; NULL: no check, not
-- probed yet, or the container is not running (a new or stopped container
-- starts over).
ALTER TABLE components ADD COLUMN health TEXT CHECK (health IN ('healthy', 'unhealthy'));
ALTER TABLE components ADD COLUMN health_detail TEXT;
ALTER TABLE components ADD COLUMN health_since INTEGER;
