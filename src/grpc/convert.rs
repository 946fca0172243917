//! Conversions between the wire types and the domain types. Anything that
//! arrives over the wire is validated here exactly as a definition file is.

use crate::actors::watch::{DriftRow, ObservedContainer};
use crate::actors::{AgentError, ComponentOutcome};
use crate::names::Name;
use crate::proto;
use crate::registry::{Event, ServiceState};
use crate::routes::Route;
use crate::spec::{ComponentDef, Cpus, HealthCheck, PidsLimit, RouteDef, RoutePort, ServiceDef};

pub fn service_to_proto(def: &ServiceDef) -> proto::ServiceSpec {
    proto::ServiceSpec {
        name: def.name.to_string(),
        node: def.node.to_string(),
        active: def.active,
        reconcile: def.reconcile,
        components: def.components.iter().map(component_to_proto).collect(),
    }
}

fn component_to_proto(c: &ComponentDef) -> proto::ComponentSpec {
    proto::ComponentSpec {
        name: c.name.to_string(),
        image: c.image.to_string(),
        restart: c.restart.to_string(),
        ports: c.ports.iter().map(|p| p.as_str().to_string()).collect(),
        volumes: c.volumes.iter().map(|v| v.as_str().to_string()).collect(),
        env: c
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        secrets: c
            .secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        secret_files: c
            .secret_files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        cmd: c.cmd.clone(),
        entrypoint: c.entrypoint.clone(),
        labels: c
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        network: c
            .network
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_default(),
        user: c.user.as_ref().map(|u| u.to_string()).unwrap_or_default(),
        health: c.health.as_ref().map(|h| proto::Health {
            cmd: h.cmd.clone(),
            http: h.http.as_ref().map(|u| u.to_string()).unwrap_or_default(),
            tcp: h.tcp.as_ref().map(|t| t.to_string()).unwrap_or_default(),
            interval: h.interval.to_string(),
            timeout: h.timeout.to_string(),
            retries: h.retries,
            start_period: h.start_period.to_string(),
            on_unhealthy: h.on_unhealthy.as_str().to_string(),
        }),
        depends_on: c.depends_on.iter().map(|d| d.to_string()).collect(),
        pull: c.pull.as_str().to_string(),
        memory: c.memory.as_ref().map(|m| m.to_string()).unwrap_or_default(),
        cpus: c.cpus.map_or(0.0, f64::from),
        pids: c.pids.map_or(0, |p| p.get()),
        read_only: c.read_only,
        tmpfs: c.tmpfs.iter().map(|t| t.as_str().to_string()).collect(),
        workdir: c
            .workdir
            .as_ref()
            .map(|w| w.to_string())
            .unwrap_or_default(),
        stop_signal: c
            .stop_signal
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        stop_timeout: c
            .stop_timeout
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default(),
        cap_drop: c.cap_drop.iter().map(|x| x.to_string()).collect(),
        cap_add: c.cap_add.iter().map(|x| x.to_string()).collect(),
        routes: c
            .routes
            .iter()
            .map(|r| proto::RouteSpec {
                name: r.key().to_string(),
                port: u32::from(r.port.get()),
                hostname: r
                    .hostname
                    .as_ref()
                    .map(|h| h.to_string())
                    .unwrap_or_default(),
                mode: r.mode.as_str().to_string(),
            })
            .collect(),
    }
}

fn route_from_proto(r: proto::RouteSpec) -> Result<RouteDef, String> {
    let optional = |s: String| (!s.is_empty()).then_some(s);
    Ok(RouteDef {
        name: optional(r.name).map(|n| n.parse()).transpose()?,
        port: RoutePort::try_from(i64::from(r.port))?,
        hostname: optional(r.hostname).map(|h| h.parse()).transpose()?,
        mode: if r.mode.is_empty() {
            Default::default()
        } else {
            r.mode.parse()?
        },
    })
}

fn health_from_proto(h: proto::Health) -> Result<HealthCheck, String> {
    let optional = |s: String| (!s.is_empty()).then_some(s);
    Ok(HealthCheck {
        cmd: h.cmd,
        http: optional(h.http).map(|u| u.parse()).transpose()?,
        tcp: optional(h.tcp).map(|t| t.parse()).transpose()?,
        interval: h.interval.parse()?,
        timeout: h.timeout.parse()?,
        retries: h.retries,
        start_period: h.start_period.parse()?,
        on_unhealthy: if h.on_unhealthy.is_empty() {
            Default::default()
        } else {
            h.on_unhealthy.parse()?
        },
    })
}

fn invalid(what: String) -> AgentError {
    AgentError::InvalidArgument(what)
}

pub fn service_from_proto(spec: proto::ServiceSpec) -> Result<ServiceDef, AgentError> {
    let name = Name::parse(&spec.name).map_err(|e| invalid(format!("service: {e}")))?;
    let node = Name::parse(&spec.node).map_err(|e| invalid(format!("node: {e}")))?;
    let components = spec
        .components
        .into_iter()
        .map(|c| {
            let label = c.name.clone();
            component_from_proto(c).map_err(|e| invalid(format!("component {label:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let def = ServiceDef {
        name,
        node,
        active: spec.active,
        reconcile: spec.reconcile,
        components,
    };
    def.check().map_err(|(_, m)| invalid(m))?;
    Ok(def)
}

fn component_from_proto(c: proto::ComponentSpec) -> Result<ComponentDef, String> {
    let optional = |s: String| (!s.is_empty()).then_some(s);
    Ok(ComponentDef {
        name: Name::parse(&c.name).map_err(|e| e.to_string())?,
        image: c.image.parse()?,
        restart: if c.restart.is_empty() {
            Default::default()
        } else {
            c.restart.parse()?
        },
        ports: c
            .ports
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()?,
        routes: c
            .routes
            .into_iter()
            .map(route_from_proto)
            .collect::<Result<Vec<_>, _>>()?
            .try_into()?,
        volumes: c
            .volumes
            .iter()
            .map(|v| v.parse())
            .collect::<Result<_, _>>()?,
        env: c
            .env
            .into_iter()
            .map(|(k, v)| Ok((k.parse()?, v)))
            .collect::<Result<_, String>>()?,
        secrets: c
            .secrets
            .into_iter()
            .map(|(k, v)| Ok((k.parse()?, v.parse()?)))
            .collect::<Result<_, String>>()?,
        secret_files: c
            .secret_files
            .into_iter()
            .map(|(k, v)| Ok((k.parse()?, v.parse()?)))
            .collect::<Result<_, String>>()?,
        cmd: c.cmd,
        entrypoint: c.entrypoint,
        labels: c
            .labels
            .into_iter()
            .map(|(k, v)| Ok((k.parse()?, v)))
            .collect::<Result<_, String>>()?,
        network: optional(c.network).map(|n| n.parse()).transpose()?,
        user: optional(c.user).map(|u| u.parse()).transpose()?,
        health: c.health.map(health_from_proto).transpose()?,
        depends_on: c
            .depends_on
            .iter()
            .map(|d| Name::parse(d).map_err(|e| format!("depends_on: {e}")))
            .collect::<Result<_, _>>()?,
        pull: if c.pull.is_empty() {
            Default::default()
        } else {
            c.pull.parse()?
        },
        memory: optional(c.memory).map(|m| m.parse()).transpose()?,
        // Not set is 0 on the wire; anything else is checked like a file's.
        cpus: (c.cpus != 0.0)
            .then(|| Cpus::try_from(c.cpus))
            .transpose()?,
        pids: (c.pids != 0)
            .then(|| PidsLimit::try_from(c.pids))
            .transpose()?,
        read_only: c.read_only,
        tmpfs: c
            .tmpfs
            .iter()
            .map(|t| t.parse())
            .collect::<Result<_, _>>()?,
        workdir: optional(c.workdir).map(|w| w.parse()).transpose()?,
        stop_signal: optional(c.stop_signal).map(|s| s.parse()).transpose()?,
        stop_timeout: optional(c.stop_timeout).map(|t| t.parse()).transpose()?,
        cap_drop: c
            .cap_drop
            .iter()
            .map(|x| x.parse())
            .collect::<Result<_, _>>()?,
        cap_add: c
            .cap_add
            .iter()
            .map(|x| x.parse())
            .collect::<Result<_, _>>()?,
    })
}

pub fn outcome_to_proto(o: ComponentOutcome) -> proto::ComponentResult {
    let (ok, detail) = match o.result {
        Ok(done) => (true, done),
        Err(e) => (false, e.to_string()),
    };
    proto::ComponentResult {
        component: o.component,
        ok,
        detail,
        container_id: o.container_id.unwrap_or_default(),
        observed_state: o.observed_state,
    }
}

pub fn route_to_proto(r: &Route) -> proto::Route {
    proto::Route {
        service: r.service.clone(),
        component: r.component.clone(),
        name: r.name.clone(),
        address: r.address.clone(),
        host_port: u32::from(r.host_port),
        container_port: u32::from(r.container_port),
        hostname: r.hostname.clone().unwrap_or_default(),
        mode: r.mode.as_str().to_string(),
        env: r.env.clone(),
        allocated_at_ms: r.allocated_at_ms,
    }
}

/// The routes of `service/component` among `routes`, on the wire.
fn routes_of(routes: &[Route], service: &str, component: &str) -> Vec<proto::Route> {
    routes
        .iter()
        .filter(|r| r.service == service && r.component == component)
        .map(route_to_proto)
        .collect()
}

/// A service's state, each component with its routes (from `routes`).
pub fn service_state_to_proto(s: ServiceState, routes: &[Route]) -> proto::ServiceStatus {
    let service = s.name.clone();
    proto::ServiceStatus {
        name: s.name,
        active: s.active,
        components: s
            .components
            .into_iter()
            .map(|c| proto::ComponentStatus {
                routes: routes_of(routes, &service, &c.name),
                name: c.name,
                desired_state: c.desired_state.to_string(),
                observed_state: c.observed_state,
                image: c.image.unwrap_or_default(),
                container_id: c.container_id.unwrap_or_default(),
                deployed_at_ms: c.deployed_at_ms.unwrap_or(0),
                observed_at_ms: c.observed_at_ms.unwrap_or(0),
                drift_since_ms: c.drift.as_ref().map_or(0, |d| d.since_ms),
                drift_detail: c.drift.map(|d| d.detail).unwrap_or_default(),
                health: c
                    .health
                    .as_ref()
                    .map(|h| h.as_str().to_string())
                    .unwrap_or_default(),
                health_detail: c.health.map(|h| h.detail).unwrap_or_default(),
                image_id: c.image_id.unwrap_or_default(),
            })
            .collect(),
    }
}

/// A container as the watch saw it, with its component's routes.
pub fn observed_to_proto(c: ObservedContainer, routes: &[Route]) -> proto::ContainerInfo {
    proto::ContainerInfo {
        routes: if c.service.is_empty() {
            Vec::new()
        } else {
            routes_of(routes, &c.service, &c.component)
        },
        name: c.name,
        id: c.id,
        image: c.image,
        state: c.state,
        status: c.status,
        service: c.service,
        component: c.component,
        desired_state: c.desired_state.to_string(),
        health: c.health,
        image_id: c.image_id,
    }
}

pub fn drift_to_proto(d: DriftRow) -> proto::DriftInfo {
    proto::DriftInfo {
        service: d.service,
        component: d.component,
        desired_state: d.desired.to_string(),
        observed_state: d.observed,
        since_ms: d.since_ms,
        detail: d.detail,
    }
}

pub fn change_to_proto(c: crate::plan::Change) -> proto::PlanChange {
    proto::PlanChange {
        component: c.component,
        field: c.field,
        deployed: c.deployed,
        local: c.local,
    }
}

pub fn event_to_proto(e: Event) -> proto::Event {
    proto::Event {
        id: e.id,
        ts_ms: e.ts_ms,
        node: e.node,
        service: e.service,
        component: e.component,
        kind: e.kind,
        detail: e.detail,
        by: e.by,
    }
}

pub fn recovery_to_proto(r: &crate::actors::recovery::RecoveryStatus) -> proto::RecoveryStatus {
    proto::RecoveryStatus {
        in_progress: r.in_progress,
        stage: r.stage.clone().unwrap_or_default(),
        done: r.done as u32,
        total: r.total as u32,
        recovered: r.recovered as u32,
        failed: r.failed as u32,
        started_at_ms: r.started_at_ms.unwrap_or(0),
        finished_at_ms: r.finished_at_ms.unwrap_or(0),
        detail: r.detail.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_service;
    use std::path::Path;

    #[test]
    fn round_trip_through_the_wire() {
        let def = parse_service(
            Path::new("svc.toml"),
            r#"
name = "svc"
node = "n1"
[[components]]
name = "api"
image = "localhost/x:1"
restart = "always"
ports = ["127.0.0.1:8080:80"]
volumes = ["/srv/svc:/data:ro"]
env = { A = "1", B_2 = "two words" }
cmd = ["sh", "-c", "echo hi"]
entrypoint = ["/bin/tini", "--"]
network = "mcp"
user = "1000:1000"
labels = { team = "infra", "org.example/tier" = "web" }
workdir = "/srv/app"
read_only = true
tmpfs = ["/tmp:size=64m,mode=1777", "/run"]
memory = "512M"
cpus = 1.5
pids = 200
cap_drop = ["ALL"]
cap_add = ["NET_BIND_SERVICE", "cap_net_raw"]
stop_signal = "SIGQUIT"
stop_timeout = "20s"
secrets = { DB_PASSWORD = "db-password", API_KEY = "api-key" }
secret_files = { "db-password" = "/run/secrets/db", tls-key = "/etc/tls/key.pem" }

[[components]]
name = "plain"
image = "localhost/x:1"
"#,
        )
        .unwrap();
        let wire = service_to_proto(&def);
        assert_eq!(wire.components[0].secrets["DB_PASSWORD"], "db-password");
        assert_eq!(
            wire.components[0].secret_files["tls-key"],
            "/etc/tls/key.pem"
        );
        assert!(wire.components[1].secrets.is_empty());
        assert_eq!(wire.components[0].cpus, 1.5);
        assert_eq!(wire.components[0].memory, "512M");
        // Unset is the wire's zero value, and back.
        assert_eq!(wire.components[1].cpus, 0.0);
        assert_eq!(wire.components[1].pids, 0);
        assert_eq!(service_from_proto(wire).unwrap(), def);
    }

    #[test]
    fn wire_input_is_validated() {
        let mut spec = proto::ServiceSpec {
            name: "svc".into(),
            node: "n1".into(),
            active: true,
            reconcile: None,
            components: vec![proto::ComponentSpec {
                name: "api".into(),
                image: "img".into(),
                ..Default::default()
            }],
        };
        assert!(service_from_proto(spec.clone()).is_ok());
        spec.components[0].restart = "sometimes".into();
        assert!(service_from_proto(spec.clone()).is_err());
        spec.components[0].restart.clear();
        for bad in [
            proto::ComponentSpec {
                memory: "lots".into(),
                ..spec.components[0].clone()
            },
            proto::ComponentSpec {
                cpus: -1.0,
                ..spec.components[0].clone()
            },
            proto::ComponentSpec {
                pids: -5,
                ..spec.components[0].clone()
            },
            proto::ComponentSpec {
                cap_add: vec!["NET_ADMN".into()],
                ..spec.components[0].clone()
            },
            proto::ComponentSpec {
                stop_signal: "SIGFOO".into(),
                ..spec.components[0].clone()
            },
            proto::ComponentSpec {
                tmpfs: vec!["tmp".into()],
                ..spec.components[0].clone()
            },
            proto::ComponentSpec {
                secrets: [("DB".to_string(), "../etc/passwd".to_string())].into(),
                ..spec.components[0].clone()
            },
            proto::ComponentSpec {
                secrets: [("1DB".to_string(), "db".to_string())].into(),
                ..spec.components[0].clone()
            },
            proto::ComponentSpec {
                secret_files: [("db".to_string(), "run/db".to_string())].into(),
                ..spec.components[0].clone()
            },
            proto::ComponentSpec {
                secret_files: [("Db".to_string(), "/run/db".to_string())].into(),
                ..spec.components[0].clone()
            },
            proto::ComponentSpec {
                env: [("DB".to_string(), "x".to_string())].into(),
                secrets: [("DB".to_string(), "db".to_string())].into(),
                ..spec.components[0].clone()
            },
        ] {
            let what = format!("{bad:?}");
            let spec = proto::ServiceSpec {
                components: vec![bad],
                ..spec.clone()
            };
            assert!(service_from_proto(spec).is_err(), "{what}");
        }
        spec.name = "../etc".into();
        assert!(service_from_proto(spec.clone()).is_err());
        spec.name = "svc".into();
        spec.components.clear();
        assert!(service_from_proto(spec).is_err());
    }
}
