//! Schema migrations: the SQL files in `migrations/`, applied in order inside
//! one transaction each, and recorded in `schema_migrations`.

use rusqlite::{params, Connection};

use super::{now_ms, Result};

/// (version, name, SQL). Append only: a released migration never changes.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "0002_watch",
        include_str!("../../migrations/0002_watch.sql"),
    ),
    (
        3,
        "0003_spec_history",
        include_str!("../../migrations/0003_spec_history.sql"),
    ),
    (
        4,
        "0004_deploy_progress",
        include_str!("../../migrations/0004_deploy_progress.sql"),
    ),
    (
        5,
        "0005_audit",
        include_str!("../../migrations/0005_audit.sql"),
    ),
    (
        6,
        "0006_self_healing",
        include_str!("../../migrations/0006_self_healing.sql"),
    ),
    (
        7,
        "0007_event_retention",
        include_str!("../../migrations/0007_event_retention.sql"),
    ),
    (
        8,
        "0008_image_ids",
        include_str!("../../migrations/0008_image_ids.sql"),
    ),
    (
        9,
        "0009_routes",
        include_str!("../../migrations/0009_routes.sql"),
    ),
];

pub fn current_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?)
}

/// Applies every migration not recorded yet, in order. By what is recorded,
/// not by the highest version: migrations written on two branches at once
/// may land in either order, and a database that got the later one first
/// still gets the other.
pub fn apply(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )?;
    let applied: std::collections::HashSet<i64> = conn
        .prepare("SELECT version FROM schema_migrations")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| !applied.contains(v)) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![version, name, now_ms()],
        )?;
        tx.commit()?;
        tracing::info!(version, name, "applied registry migration");
    }
    Ok(())
}
