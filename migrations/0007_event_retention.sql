-- Registry schema, version 7: event retention. Pruning deletes events older
-- than an age (by ts) and, per component, all but the newest N (by id
-- within (service, component)); these indexes keep both off a full scan of
-- the table.
CREATE INDEX events_by_ts ON events (ts);
CREATE INDEX events_by_component ON events (service, component, id);
