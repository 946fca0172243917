-- Registry schema, version 9: routes and networks.
--
-- The host port allocated to each `[[components.routes]]` of a component,
-- kept across redeploys (a route keeps its port until it leaves the
-- definition or the component is undeployed). A host port belongs to one
-- route at a time.
CREATE TABLE routes (
    service        TEXT NOT NULL,
    component      TEXT NOT NULL,
    -- '' for a component's only, unnamed route.
    name           TEXT NOT NULL,
    address        TEXT NOT NULL,
    host_port      INTEGER NOT NULL UNIQUE CHECK (host_port BETWEEN 1 AND 65535),
    container_port INTEGER NOT NULL CHECK (container_port BETWEEN 1 AND 65535),
    hostname       TEXT,
    mode           TEXT NOT NULL CHECK (mode IN ('l4', 'l7')),
    allocated_at   INTEGER NOT NULL,
    PRIMARY KEY (service, component, name),
    FOREIGN KEY (service, component) REFERENCES components (service, name) ON DELETE CASCADE
);

-- The networks the agent created because a definition named them.
CREATE TABLE networks (
    name       TEXT PRIMARY KEY,
    driver     TEXT NOT NULL,
    -- Comma-separated subnets, as the runtime reported them.
    subnet     TEXT NOT NULL DEFAULT '',
    -- Whether containers on it resolve each other's names; NULL: unknown.
    dns        INTEGER CHECK (dns IN (0, 1)),
    created_at INTEGER NOT NULL
);
