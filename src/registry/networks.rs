//! The networks table: what the agent created because a definition named a
//! network the runtime did not have (`mcp node` lists them).

use rusqlite::params;
use serde::Serialize;

use super::{now_ms, Registry, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkRow {
    pub name: String,
    pub driver: String,
    /// Comma-separated subnets.
    pub subnet: String,
    /// Whether its containers resolve each other's names; None: unknown.
    pub dns: Option<bool>,
    pub created_at_ms: i64,
}

impl Registry {
    /// Records a network the agent created (again, if it was re-created).
    pub fn record_network(
        &mut self,
        name: &str,
        driver: &str,
        subnet: &str,
        dns: Option<bool>,
    ) -> Result<NetworkRow> {
        let now = now_ms();
        self.conn.execute(
            "INSERT INTO networks (name, driver, subnet, dns, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO UPDATE SET driver = excluded.driver,
                subnet = excluded.subnet, dns = excluded.dns, created_at = excluded.created_at",
            params![name, driver, subnet, dns, now],
        )?;
        Ok(NetworkRow {
            name: name.to_string(),
            driver: driver.to_string(),
            subnet: subnet.to_string(),
            dns,
            created_at_ms: now,
        })
    }

    pub fn networks(&self) -> Result<Vec<NetworkRow>> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT name, driver, subnet, dns, created_at FROM networks ORDER BY name",
            )?
            .query_map([], |r| {
                Ok(NetworkRow {
                    name: r.get(0)?,
                    driver: r.get(1)?,
                    subnet: r.get(2)?,
                    dns: r.get(3)?,
                    created_at_ms: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_recorded_once_each() {
        let mut reg = Registry::open_in_memory().unwrap();
        reg.record_network("backend", "bridge", "10.89.0.0/24", Some(true))
            .unwrap();
        reg.record_network("backend", "bridge", "10.89.3.0/24", None)
            .unwrap();
        reg.record_network("a", "bridge", "", Some(false)).unwrap();
        let rows = reg.networks().unwrap();
        let seen: Vec<_> = rows
            .iter()
            .map(|n| (n.name.as_str(), n.subnet.as_str(), n.dns))
            .collect();
        assert_eq!(
            seen,
            [("a", "", Some(false)), ("backend", "10.89.3.0/24", None)]
        );
    }
}
