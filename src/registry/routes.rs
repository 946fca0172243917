//! The routes table: which host port each component's route holds. Ports
//! are assigned in one transaction on the registry's single connection, so
//! two components deploying at once never get the same port.

use std::collections::BTreeSet;

use rusqlite::{params, OptionalExtension};

use super::{now_ms, Registry, Result};
use crate::routes::allocate::pick;
use crate::routes::{Assigned, NoFreePort, PortPool, Route};
use crate::spec::{env_var_for, RouteDef, RouteMode};

const ROUTE_COLUMNS: &str = "service, component, name, address, host_port, container_port,
    hostname, mode, allocated_at";

fn route_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Route> {
    let name: String = r.get(2)?;
    let mode: String = r.get(7)?;
    Ok(Route {
        service: r.get(0)?,
        component: r.get(1)?,
        env: env_var_for(&name),
        name,
        address: r.get(3)?,
        host_port: r.get(4)?,
        container_port: r.get(5)?,
        hostname: r.get(6)?,
        // The column's CHECK admits only the two modes.
        mode: mode.parse().unwrap_or(RouteMode::L4),
        allocated_at_ms: r.get(8)?,
    })
}

impl Registry {
    /// Makes `service/component`'s routes what `wanted` says: a route it
    /// already has keeps its host port (its container port, hostname, mode
    /// and address follow the definition, and when one changed the route is
    /// both in `removed`, as it was, and in `added`, as it is); a new one
    /// gets a port from `pool`; one no longer wanted is released. Inner
    /// Err: the pool has no port left, and nothing was changed.
    pub fn assign_routes(
        &mut self,
        service: &str,
        component: &str,
        wanted: &[RouteDef],
        pool: &PortPool,
    ) -> Result<std::result::Result<Assigned, NoFreePort>> {
        let tx = self.conn.transaction()?;
        let mut had: Vec<Route> = tx
            .prepare_cached(&format!(
                "SELECT {ROUTE_COLUMNS} FROM routes WHERE service = ?1 AND component = ?2"
            ))?
            .query_map(params![service, component], route_row)?
            .collect::<rusqlite::Result<_>>()?;
        let mut assigned = Assigned::default();
        for gone in had
            .iter()
            .filter(|r| !wanted.iter().any(|w| w.key() == r.name))
        {
            tx.execute(
                "DELETE FROM routes WHERE service = ?1 AND component = ?2 AND name = ?3",
                params![service, component, gone.name],
            )?;
            assigned.removed.push(gone.clone());
        }
        had.retain(|r| wanted.iter().any(|w| w.key() == r.name));
        let mut taken: BTreeSet<u16> = tx
            .prepare_cached("SELECT host_port FROM routes")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let address = pool.address.to_string();
        for w in wanted {
            let hostname = w.hostname.as_ref().map(|h| h.to_string());
            let route = match had.iter().find(|r| r.name == w.key()) {
                Some(existing) => {
                    tx.execute(
                        "UPDATE routes SET address = ?4, container_port = ?5, hostname = ?6,
                            mode = ?7
                         WHERE service = ?1 AND component = ?2 AND name = ?3",
                        params![
                            service,
                            component,
                            w.key(),
                            address,
                            w.port.get(),
                            hostname,
                            w.mode.as_str()
                        ],
                    )?;
                    let route = Route {
                        address: address.clone(),
                        container_port: w.port.get(),
                        hostname,
                        mode: w.mode,
                        ..existing.clone()
                    };
                    // Same port, other facts (a hostname, a mode): told as
                    // the old route gone and the new one added.
                    if &route != existing {
                        assigned.removed.push(existing.clone());
                        assigned.added.push(route.clone());
                    }
                    route
                }
                None => {
                    let host_port = match pick(pool, &taken) {
                        Ok(port) => port,
                        // Dropping the transaction rolls back what it did.
                        Err(none) => return Ok(Err(none)),
                    };
                    taken.insert(host_port);
                    let route = Route {
                        service: service.to_string(),
                        component: component.to_string(),
                        name: w.key().to_string(),
                        address: address.clone(),
                        host_port,
                        container_port: w.port.get(),
                        hostname,
                        mode: w.mode,
                        env: w.env_var(),
                        allocated_at_ms: now_ms(),
                    };
                    tx.execute(
                        &format!(
                            "INSERT INTO routes ({ROUTE_COLUMNS})
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                        ),
                        params![
                            route.service,
                            route.component,
                            route.name,
                            route.address,
                            route.host_port,
                            route.container_port,
                            route.hostname,
                            route.mode.as_str(),
                            route.allocated_at_ms
                        ],
                    )?;
                    assigned.added.push(route.clone());
                    route
                }
            };
            assigned.routes.push(route);
        }
        tx.commit()?;
        Ok(Ok(assigned))
    }

    /// Releases every route of `service/component`; returns them.
    pub fn release_routes(&mut self, service: &str, component: &str) -> Result<Vec<Route>> {
        let tx = self.conn.transaction()?;
        let gone: Vec<Route> = tx
            .prepare_cached(&format!(
                "SELECT {ROUTE_COLUMNS} FROM routes WHERE service = ?1 AND component = ?2
                 ORDER BY name"
            ))?
            .query_map(params![service, component], route_row)?
            .collect::<rusqlite::Result<_>>()?;
        tx.execute(
            "DELETE FROM routes WHERE service = ?1 AND component = ?2",
            params![service, component],
        )?;
        tx.commit()?;
        Ok(gone)
    }

    /// Every route (of `service` only, when given), by service, component
    /// and name.
    pub fn routes(&self, service: Option<&str>) -> Result<Vec<Route>> {
        let rows = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ROUTE_COLUMNS} FROM routes WHERE ?1 IS NULL OR service = ?1
                 ORDER BY service, component, name"
            ))?
            .query_map(params![service], route_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The route holding `host_port`, if any.
    pub fn route_by_port(&self, host_port: u16) -> Result<Option<Route>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {ROUTE_COLUMNS} FROM routes WHERE host_port = ?1"
            ))?
            .query_row(params![host_port], route_row)
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;

    use super::*;
    use crate::registry::DesiredState;
    use crate::spec::parse_service;

    fn always(_: IpAddr, _: u16) -> bool {
        true
    }

    fn not_10001(_: IpAddr, port: u16) -> bool {
        port != 10001
    }

    fn pool(first: u16, last: u16, probe: fn(IpAddr, u16) -> bool) -> PortPool {
        PortPool {
            first,
            last,
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            probe,
        }
    }

    /// A registry knowing `svc` with components `api` and `web`, each with
    /// the routes written in `api_routes` / `web_routes` (TOML tables).
    fn registry(api_routes: &str, web_routes: &str) -> (Registry, Vec<RouteDef>, Vec<RouteDef>) {
        let def = parse_service(
            Path::new("svc.toml"),
            &format!(
                "name = \"svc\"\nnode = \"n1\"\n[[components]]\nname = \"api\"\nimage = \"i:1\"\n\
                 {api_routes}\n[[components]]\nname = \"web\"\nimage = \"i:1\"\n{web_routes}\n"
            ),
        )
        .unwrap();
        let mut reg = Registry::open_in_memory().unwrap();
        reg.push_definition(&def, None, DesiredState::Running)
            .unwrap();
        let api = def.components[0].routes.as_slice().to_vec();
        let web = def.components[1].routes.as_slice().to_vec();
        (reg, api, web)
    }

    fn ports(routes: &[Route]) -> Vec<(String, u16)> {
        routes
            .iter()
            .map(|r| (r.name.clone(), r.host_port))
            .collect()
    }

    #[test]
    fn a_route_keeps_its_port_across_assignments() {
        let (mut reg, api, _) = registry(
            "routes = [{ name = \"http\", port = 8080 }, { name = \"grpc\", port = 9090 }]",
            "",
        );
        let first = reg
            .assign_routes("svc", "api", &api, &pool(10000, 10010, always))
            .unwrap()
            .unwrap();
        assert_eq!(
            ports(&first.routes),
            [("http".into(), 10000), ("grpc".into(), 10001)]
        );
        assert_eq!(first.added.len(), 2);
        assert_eq!(first.routes[1].env, "PORT_GRPC");
        // Again, even with those ports busy on the host now (the running
        // container holds them): the same ports, nothing added.
        let again = reg
            .assign_routes("svc", "api", &api, &pool(10000, 10010, |_, _| false))
            .unwrap()
            .unwrap();
        assert_eq!(again.routes, first.routes);
        assert!(again.added.is_empty() && again.removed.is_empty());
    }

    #[test]
    fn new_routes_skip_ports_taken_by_routes_or_the_host() {
        let (mut reg, api, web) = registry(
            "routes = [{ port = 8080 }]",
            "routes = [{ name = \"a\", port = 80 }, { name = \"b\", port = 81 }]",
        );
        let api = reg
            .assign_routes("svc", "api", &api, &pool(10000, 10010, always))
            .unwrap()
            .unwrap();
        assert_eq!(ports(&api.routes), [(String::new(), 10000)]);
        assert_eq!(api.routes[0].env, "PORT");
        let web = reg
            .assign_routes("svc", "web", &web, &pool(10000, 10010, not_10001))
            .unwrap()
            .unwrap();
        assert_eq!(
            ports(&web.routes),
            [("a".into(), 10002), ("b".into(), 10003)]
        );
        assert_eq!(reg.routes(None).unwrap().len(), 3);
        assert_eq!(
            reg.route_by_port(10002).unwrap().map(|r| r.component),
            Some("web".to_string())
        );
    }

    #[test]
    fn an_exhausted_range_is_a_clear_error_and_changes_nothing() {
        let (mut reg, api, web) = registry(
            "routes = [{ port = 8080 }]",
            "routes = [{ name = \"a\", port = 80 }, { name = \"b\", port = 81 }]",
        );
        reg.assign_routes("svc", "api", &api, &pool(10000, 10001, always))
            .unwrap()
            .unwrap();
        let err = reg
            .assign_routes("svc", "web", &web, &pool(10000, 10001, always))
            .unwrap()
            .unwrap_err();
        // Api's port, and the one web's first route had taken.
        assert_eq!((err.allocated, err.busy), (2, 0));
        assert!(err
            .to_string()
            .contains("no free host port in [routes] port_range 10000-10001"));
        // Web's first route, which fitted, was rolled back with the rest.
        assert_eq!(reg.routes(Some("svc")).unwrap().len(), 1);
    }

    #[test]
    fn routes_leave_with_the_definition_and_the_component() {
        let (mut reg, api, _) = registry(
            "routes = [{ name = \"http\", port = 8080 }, { name = \"grpc\", port = 9090 }]",
            "",
        );
        reg.assign_routes("svc", "api", &api, &pool(10000, 10010, always))
            .unwrap()
            .unwrap();
        // The definition drops grpc and changes http's container port.
        let mut changed = api[..1].to_vec();
        changed[0].port = crate::spec::RoutePort::try_from(8081).unwrap();
        let after = reg
            .assign_routes("svc", "api", &changed, &pool(10000, 10010, always))
            .unwrap()
            .unwrap();
        assert_eq!(ports(&after.routes), [("http".into(), 10000)]);
        assert_eq!(after.routes[0].container_port, 8081);
        // grpc went; http changed, so it is told as gone and added again.
        assert_eq!(
            ports(&after.removed),
            [("grpc".into(), 10001), ("http".into(), 10000)]
        );
        assert_eq!(after.removed[1].container_port, 8080);
        assert_eq!(after.added, after.routes);
        let gone = reg.release_routes("svc", "api").unwrap();
        assert_eq!(ports(&gone), [("http".into(), 10000)]);
        assert!(reg.routes(None).unwrap().is_empty());
        // A forgotten component's routes go with it.
        reg.assign_routes("svc", "api", &api, &pool(10000, 10010, always))
            .unwrap()
            .unwrap();
        reg.delete_service("svc").unwrap();
        assert!(reg.routes(None).unwrap().is_empty());
    }
}
