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
];

pub fn current_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?)
}

pub fn apply(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )?;
    let current = current_version(conn)?;
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
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
