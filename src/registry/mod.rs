//! The agent's SQLite registry: desired and observed state, deployed specs and
//! events. Plain synchronous code; the RegistryActor owns the one connection
//! and runs it on its own thread.

mod migrations;
mod networks;
mod routes;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::names::Name;
use crate::spec::{ComponentDef, HealthCheck, ServiceDef};

pub use migrations::MIGRATIONS;
pub use networks::NetworkRow;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("registry: stored spec of {service}/{component} is unreadable: {source}")]
    CorruptSpec {
        service: String,
        component: String,
        source: serde_json::Error,
    },
    #[error("registry: cannot create {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The registry actor panicked handling a request (and reopened the
    /// database); the request had no effect, or only a rolled-back one.
    #[error("registry: the request failed on an internal error and was not applied ({0})")]
    Panicked(String),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Stopped,
    Ignore,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
            DesiredState::Ignore => "ignore",
        }
    }

    pub fn from_active(active: bool) -> Self {
        if active {
            DesiredState::Running
        } else {
            DesiredState::Stopped
        }
    }
}

impl FromStr for DesiredState {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "running" => Ok(DesiredState::Running),
            "stopped" => Ok(DesiredState::Stopped),
            "ignore" => Ok(DesiredState::Ignore),
            other => Err(format!("unknown desired state {other:?}")),
        }
    }
}

impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the registry knows of a component, its specs aside: all that
/// listings, scans and drift need, read without decoding any spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentState {
    pub service: String,
    pub name: String,
    pub desired_state: DesiredState,
    pub observed_state: String,
    pub container_id: Option<String>,
    pub image: Option<String>,
    pub deployed_at_ms: Option<i64>,
    pub observed_at_ms: Option<i64>,
    /// Since when observed state differs from desired, and how.
    pub drift: Option<Drift>,
    /// Since when an operation has been moving the component to a new spec
    /// (recorded before the container is replaced, cleared with the
    /// outcome); still set after a restart: the agent died during it.
    pub pending_since_ms: Option<i64>,
    /// When the deployed spec last passed its checks; None: it has not.
    pub verified_at_ms: Option<i64>,
    /// What the probes saw last while the container ran; None: no check,
    /// not probed yet, or not running.
    pub health: Option<HealthState>,
    /// The id of the image its container was last seen created from.
    pub image_id: Option<String>,
}

/// See [`Registry::image_references`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageReferences {
    pub ids_in_use: std::collections::BTreeSet<String>,
    pub references: std::collections::BTreeSet<String>,
    /// (image id, reference it was deployed as) of every image MCP ran.
    pub used: Vec<(String, String)>,
}

/// What the watch probes: (service, component), container id, check.
pub type ProbeTarget = ((String, String), String, HealthCheck);

/// A running component's health, as the agent's probes last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthState {
    pub healthy: bool,
    pub since_ms: i64,
    pub detail: String,
}

impl HealthState {
    pub fn as_str(&self) -> &'static str {
        if self.healthy {
            "healthy"
        } else {
            "unhealthy"
        }
    }
}

impl ComponentState {
    /// The deployed spec passed its checks, and nothing is in progress.
    pub fn verified(&self) -> bool {
        self.verified_at_ms.is_some() && self.pending_since_ms.is_none()
    }
}

/// A component's state and its specs.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentRow {
    pub state: ComponentState,
    /// The spec as last defined (deployed or not).
    pub spec: ComponentDef,
    /// The spec the component's container was last created from.
    pub deployed_spec: Option<ComponentDef>,
    /// The spec an operation is moving the component to, if one is (or was,
    /// when the agent died during it).
    pub pending_spec: Option<ComponentDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub since_ms: i64,
    pub detail: String,
}

/// A container no service claims (desired state `ignore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmanagedRow {
    pub container_id: String,
    pub name: String,
    pub image: String,
    pub observed_state: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// One observation of a managed component by a scan or an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub service: String,
    pub component: String,
    pub container_id: Option<String>,
    pub observed_state: String,
    /// The spec the container says it was created from (its label), which
    /// wins over the registry's record: after a crash mid-deploy, the
    /// container is the only witness of what it runs.
    pub created_from: Option<ComponentDef>,
}

/// The container `mcp adopt` takes over, as the runtime showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedContainer {
    pub id: String,
    pub name: String,
    pub observed_state: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("there is no container named {0} on this node (`mcp ps` lists them)")]
    NoSuchContainer(String),
    #[error("container {container} is already managed, as {service}/{component}")]
    Managed {
        container: String,
        service: String,
        component: String,
    },
    #[error(
        "{service}/{component} is already managed with container {container}: pick another --as"
    )]
    Taken {
        service: String,
        component: String,
        container: String,
    },
    #[error("container {name} cannot be described by a definition: {why}")]
    Unrepresentable { name: String, why: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// A service and its components, with specs (`ComponentRow`) or without
/// (`ComponentState`, see `ServiceState`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow<C = ComponentRow> {
    pub name: String,
    pub active: bool,
    /// The definition's `reconcile`; None: the agent's default.
    pub reconcile: Option<bool>,
    pub components: Vec<C>,
}

pub type ServiceState = ServiceRow<ComponentState>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub id: i64,
    pub ts_ms: i64,
    pub node: String,
    pub service: String,
    pub component: String,
    pub kind: String,
    pub detail: String,
    /// Who caused it: an account's name, [`AGENT`] for the agent's own
    /// actions, empty for what it only observed.
    pub by: String,
}

/// The `by` of what the agent does on its own (recovery, reconciliation,
/// restarts, pruning).
pub const AGENT: &str = "mcp-agent";

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How long events are kept (`[registry]` in the agent config); None is
/// no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Events older than this are deleted.
    pub max_age_ms: Option<i64>,
    /// Each (service, component) keeps at most this many, the newest.
    pub per_component: Option<usize>,
}

impl Retention {
    /// No limit at all: nothing to prune.
    pub fn is_off(&self) -> bool {
        self.max_age_ms.is_none() && self.per_component.is_none()
    }
}

/// What [`Registry::prune_events`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    pub by_age: usize,
    pub by_count: usize,
}

impl Pruned {
    pub fn total(&self) -> usize {
        self.by_age + self.by_count
    }
}

/// What a component's container really is after an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerFacts {
    pub container_id: Option<String>,
    pub observed_state: String,
    /// The spec of the container that is there now, when this operation
    /// created it. None leaves the recorded deployed spec as it was: the
    /// last spec MCP created a container from, even if that container has
    /// since gone (then container_id is None and observed_state "absent").
    pub created_from: Option<ComponentDef>,
    /// The container passed the operation's checks (running, healthy).
    pub verified: bool,
    /// The id of the container's image; None keeps the recorded one.
    pub image_id: Option<String>,
}

/// The columns `component_state` reads, in its order.
const STATE_COLUMNS: &str = "service, name, desired_state, observed_state, container_id, image,
    deployed_at, observed_at, drift_since, drift_detail, pending_since, verified_at,
    health, health_since, health_detail, image_id";
const STATE_COLUMN_COUNT: usize = 16;

fn component_state(r: &rusqlite::Row<'_>) -> rusqlite::Result<ComponentState> {
    let desired: String = r.get(2)?;
    let drift_since: Option<i64> = r.get(8)?;
    let drift_detail: Option<String> = r.get(9)?;
    Ok(ComponentState {
        service: r.get(0)?,
        name: r.get(1)?,
        // The column's CHECK admits only the three states.
        desired_state: desired.parse().unwrap_or(DesiredState::Ignore),
        observed_state: r.get(3)?,
        container_id: r.get(4)?,
        image: r.get(5)?,
        deployed_at_ms: r.get(6)?,
        observed_at_ms: r.get(7)?,
        drift: drift_since.map(|since_ms| Drift {
            since_ms,
            detail: drift_detail.unwrap_or_default(),
        }),
        pending_since_ms: r.get(10)?,
        verified_at_ms: r.get(11)?,
        health: match (
            r.get::<_, Option<String>>(12)?,
            r.get::<_, Option<i64>>(13)?,
        ) {
            (Some(health), Some(since_ms)) => Some(HealthState {
                healthy: health == "healthy",
                since_ms,
                detail: r.get::<_, Option<String>>(14)?.unwrap_or_default(),
            }),
            _ => None,
        },
        image_id: r.get(15)?,
    })
}

/// A component row of either kind, by the service it belongs to.
trait HasService {
    fn service(&self) -> &str;
}

impl HasService for ComponentState {
    fn service(&self) -> &str {
        &self.service
    }
}

impl HasService for ComponentRow {
    fn service(&self) -> &str {
        &self.state.service
    }
}

pub struct Registry {
    conn: Connection,
}

/// A container a component claims is not unmanaged, whatever an older scan
/// or event says (an adopt may have landed in between).
const UPSERT_UNMANAGED: &str =
    "INSERT INTO unmanaged_containers (container_id, name, image, observed_state, first_seen, last_seen)
     SELECT ?1, ?2, ?3, ?4, ?5, ?5
     WHERE NOT EXISTS (SELECT 1 FROM components WHERE container_id = ?1)
     ON CONFLICT (container_id) DO UPDATE SET name = excluded.name, image = excluded.image,
        observed_state = excluded.observed_state, last_seen = excluded.last_seen";

/// How many earlier specs each component keeps for rollback.
pub const SPEC_HISTORY_LEN: usize = 5;

fn spec_json(spec: &ComponentDef) -> String {
    // A ComponentDef is plain strings, numbers and maps: serialisation cannot fail.
    serde_json::to_string(spec).unwrap_or_default()
}

/// Creates `db` (empty) with mode 0600 if it is missing, and makes it and
/// its journal files 0600 if they exist with wider modes.
fn make_private(db: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| RegistryError::Io {
        path: db.display().to_string(),
        source,
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(db)
        .map_err(io)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        match std::fs::metadata(&file) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
            }
            _ => {}
        }
    }
    Ok(())
}

impl Registry {
    /// Opens (creating if needed) the registry at `path`, in WAL mode, and
    /// applies pending migrations. The database and its `-wal` and `-shm`
    /// files are mode 0600 whatever the umask: SQLite gives the journal
    /// files the database's mode, so the database is made private first.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| RegistryError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        make_private(path)?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::apply(&mut conn)?;
        Ok(Registry { conn })
    }

    /// Copies the registry at `src` to `dest` with SQLite's online backup API: a
    /// consistent snapshot even while the agent writes (WAL). The copy is checked
    /// and moved into place only when complete. Returns its schema version.
    pub fn backup(src: &Path, dest: &Path) -> Result<i64> {
        use rusqlite::OpenFlags;
        let io = |path: &Path, source: std::io::Error| RegistryError::Io {
            path: path.display().to_string(),
            source,
        };
        if !src.exists() {
            return Err(io(
                src,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no registry here"),
            ));
        }
        let source = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        source.busy_timeout(std::time::Duration::from_secs(10))?;
        let partial = dest.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        make_private(&partial)?;
        {
            let mut copy = Connection::open(&partial)?;
            rusqlite::backup::Backup::new(&source, &mut copy)?.run_to_completion(
                256,
                std::time::Duration::from_millis(5),
                None,
            )?;
            let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            if check != "ok" {
                let _ = std::fs::remove_file(&partial);
                return Err(io(
                    dest,
                    std::io::Error::other(format!("the copy failed its integrity check: {check}")),
                ));
            }
        }
        std::fs::rename(&partial, dest).map_err(|e| io(dest, e))?;
        let copy = Connection::open_with_flags(dest, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        migrations::current_version(&copy)
    }

    pub fn schema_version(&self) -> Result<i64> {
        migrations::current_version(&self.conn)
    }

    /// Records a pushed definition: the service, and for each given component
    /// its spec and desired state. Components not named keep what they had.
    pub fn push_definition(
        &mut self,
        def: &ServiceDef,
        only: Option<&Name>,
        desired: DesiredState,
    ) -> Result<()> {
        let now = now_ms();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO services (name, active, reconcile, created_at, updated_at)
             VALUES (?1, ?2, ?4, ?3, ?3)
             ON CONFLICT (name) DO UPDATE SET active = excluded.active,
                reconcile = excluded.reconcile, updated_at = excluded.updated_at",
            params![def.name.as_str(), def.active, now, def.reconcile],
        )?;
        for c in def
            .components
            .iter()
            .filter(|c| only.is_none_or(|o| o == &c.name))
        {
            tx.execute(
                "INSERT INTO components (service, name, desired_state, spec, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (service, name) DO UPDATE SET
                    desired_state = excluded.desired_state,
                    spec = excluded.spec,
                    updated_at = excluded.updated_at",
                params![
                    def.name.as_str(),
                    c.name.as_str(),
                    desired.as_str(),
                    spec_json(c),
                    now
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets the desired state of one component or of all of a service's.
    /// Returns how many components it changed.
    pub fn set_desired(
        &mut self,
        service: &str,
        component: Option<&str>,
        desired: DesiredState,
    ) -> Result<usize> {
        let now = now_ms();
        let n = self.conn.execute(
            "UPDATE components SET desired_state = ?3, updated_at = ?4
             WHERE service = ?1 AND (?2 IS NULL OR name = ?2)",
            params![service, component, desired.as_str(), now],
        )?;
        if component.is_none() && desired != DesiredState::Ignore {
            self.conn.execute(
                "UPDATE services SET active = ?2, updated_at = ?3 WHERE name = ?1",
                params![service, desired == DesiredState::Running, now],
            )?;
        }
        Ok(n)
    }

    /// Records that an operation is moving the component to `spec`, before
    /// its container is replaced.
    pub fn begin_change(
        &mut self,
        service: &str,
        component: &str,
        spec: &ComponentDef,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE components SET pending_spec = ?3, pending_since = ?4
             WHERE service = ?1 AND name = ?2",
            params![service, component, spec_json(spec), now_ms()],
        )?;
        Ok(())
    }

    /// Records what the probes saw of a component's container, if it is
    /// still the one probed; true when that changed its health.
    pub fn set_health(
        &mut self,
        service: &str,
        component: &str,
        container_id: &str,
        healthy: bool,
        detail: &str,
    ) -> Result<bool> {
        let health = if healthy { "healthy" } else { "unhealthy" };
        let changed = self.conn.execute(
            "UPDATE components SET health = ?4, health_detail = ?5,
                health_since = CASE WHEN health IS ?4 THEN health_since ELSE ?6 END
             WHERE service = ?1 AND name = ?2 AND container_id = ?3
               AND observed_state = 'running' AND health IS NOT ?4",
            params![service, component, container_id, health, detail, now_ms()],
        )?;
        Ok(changed > 0)
    }

    /// The running components whose deployed spec has a health check, with
    /// their container: what the watch probes.
    pub fn health_checks(&self) -> Result<Vec<ProbeTarget>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT service, name, container_id, deployed_spec FROM components
             WHERE observed_state = 'running' AND desired_state = 'running'
               AND container_id IS NOT NULL AND deployed_spec IS NOT NULL
               AND pending_spec IS NULL",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut checks = Vec::new();
        for row in rows {
            let (service, component, id, spec) = row?;
            let spec: ComponentDef =
                serde_json::from_str(&spec).map_err(|source| RegistryError::CorruptSpec {
                    service: service.clone(),
                    component: component.clone(),
                    source,
                })?;
            if let Some(check) = spec.health {
                checks.push(((service, component), id, check));
            }
        }
        Ok(checks)
    }

    /// Records what a component's container is after an operation, which
    /// is over: nothing is pending any more. A container created from a
    /// spec is unverified unless the operation verified it; a verified spec
    /// joins the component's rollback history.
    pub fn record_container(
        &mut self,
        service: &str,
        component: &str,
        facts: &ContainerFacts,
    ) -> Result<()> {
        let now = now_ms();
        let (image, restart, deployed) = match &facts.created_from {
            Some(s) => (
                Some(s.image.as_str().to_string()),
                Some(s.restart.as_str()),
                Some(spec_json(s)),
            ),
            None => (None, None, None),
        };
        self.conn.execute(
            "UPDATE components SET container_id = ?3, observed_state = ?4, observed_at = ?5,
                image = COALESCE(?6, image), restart = COALESCE(?7, restart),
                deployed_at = CASE WHEN ?8 IS NULL THEN deployed_at ELSE ?5 END,
                deployed_spec = COALESCE(?8, deployed_spec),
                verified_at = CASE WHEN ?9 THEN ?5 WHEN ?8 IS NULL THEN verified_at ELSE NULL END,
                health = CASE WHEN container_id IS ?3 AND ?4 = 'running' THEN health END,
                health_since = CASE WHEN container_id IS ?3 AND ?4 = 'running' THEN health_since END,
                health_detail = CASE WHEN container_id IS ?3 AND ?4 = 'running' THEN health_detail END,
                pending_spec = NULL, pending_since = NULL, updated_at = ?5,
                image_id = COALESCE(?10, image_id)
             WHERE service = ?1 AND name = ?2",
            params![
                service,
                component,
                facts.container_id,
                facts.observed_state,
                now,
                image,
                restart,
                deployed,
                facts.verified,
                facts.image_id
            ],
        )?;
        if facts.image_id.is_some() {
            self.conn.execute(
                "INSERT INTO images_used (image_id, reference, last_used)
                 SELECT image_id, image, ?3 FROM components
                 WHERE service = ?1 AND name = ?2 AND image_id IS NOT NULL AND image IS NOT NULL
                 ON CONFLICT (image_id) DO UPDATE
                 SET reference = excluded.reference, last_used = excluded.last_used",
                params![service, component, now],
            )?;
        }
        if facts.verified {
            let verified: Option<String> = self
                .conn
                .prepare_cached(
                    "SELECT deployed_spec FROM components WHERE service = ?1 AND name = ?2",
                )?
                .query_row(params![service, component], |r| r.get(0))
                .optional()?
                .flatten();
            if let Some(spec) = verified {
                self.remember_spec(service, component, &spec, now)?;
            }
        }
        Ok(())
    }

    /// Keeps `spec` in the component's history (the last few specs that
    /// passed their checks), unless it is already the newest.
    fn remember_spec(
        &mut self,
        service: &str,
        component: &str,
        spec: &str,
        now: i64,
    ) -> Result<()> {
        let newest: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT spec FROM spec_history WHERE service = ?1 AND component = ?2
                 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row(params![service, component], |r| r.get(0))
            .optional()?;
        if newest.as_deref() == Some(spec) {
            return Ok(());
        }
        self.conn.execute(
            "INSERT INTO spec_history (service, component, spec, deployed_at) VALUES (?1, ?2, ?3, ?4)",
            params![service, component, spec, now],
        )?;
        self.conn.execute(
            "DELETE FROM spec_history WHERE service = ?1 AND component = ?2 AND seq NOT IN
                (SELECT seq FROM spec_history WHERE service = ?1 AND component = ?2
                 ORDER BY seq DESC LIMIT ?3)",
            params![service, component, SPEC_HISTORY_LEN as i64],
        )?;
        Ok(())
    }

    /// The newest verified spec in the component's history that differs
    /// from `other_than` (default: the one deployed now): what a rollback
    /// returns to.
    pub fn rollback_target(
        &self,
        service: &str,
        component: &str,
        other_than: Option<&ComponentDef>,
    ) -> Result<Option<ComponentDef>> {
        let current = match other_than {
            Some(spec) => Some(spec_json(spec)),
            None => self
                .component(service, component)?
                .and_then(|c| c.deployed_spec)
                .map(|s| spec_json(&s)),
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT spec FROM spec_history WHERE service = ?1 AND component = ?2 ORDER BY seq DESC",
        )?;
        let specs = stmt
            .query_map(params![service, component], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        specs
            .into_iter()
            .find(|s| Some(s) != current.as_ref())
            .map(|s| {
                serde_json::from_str(&s).map_err(|source| RegistryError::CorruptSpec {
                    service: service.to_string(),
                    component: component.to_string(),
                    source,
                })
            })
            .transpose()
    }

    /// Records states seen by a scan or events, without touching specs.
    pub fn record_observed(&mut self, observations: &[Observation]) -> Result<()> {
        let now = now_ms();
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE components SET
                    health = CASE WHEN container_id IS ?3 AND ?4 = 'running' THEN health END,
                    health_since = CASE WHEN container_id IS ?3 AND ?4 = 'running'
                                        THEN health_since END,
                    health_detail = CASE WHEN container_id IS ?3 AND ?4 = 'running'
                                         THEN health_detail END,
                    container_id = ?3, observed_state = ?4, observed_at = ?5,
                    deployed_at = CASE WHEN ?6 IS NOT NULL AND deployed_spec IS NOT ?6
                                       THEN ?5 ELSE deployed_at END,
                    verified_at = CASE WHEN ?6 IS NOT NULL AND deployed_spec IS NOT ?6
                                       THEN NULL ELSE verified_at END,
                    deployed_spec = COALESCE(?6, deployed_spec),
                    image = COALESCE(?7, image), restart = COALESCE(?8, restart)
                 WHERE service = ?1 AND name = ?2",
            )?;
            for o in observations {
                let spec = o.created_from.as_ref();
                stmt.execute(params![
                    o.service,
                    o.component,
                    o.container_id,
                    o.observed_state,
                    now,
                    spec.map(spec_json),
                    spec.map(|s| s.image.to_string()),
                    spec.map(|s| s.restart.as_str()),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets or clears the drift of each component, in one transaction, with
    /// a `drift-detected` or `drift-cleared` event for each that changed;
    /// the event (or None) per input, in its order.
    pub fn record_drift(
        &mut self,
        node: &str,
        drifts: &[(String, String, Option<Drift>)],
    ) -> Result<Vec<Option<Event>>> {
        let now = now_ms();
        let tx = self.conn.transaction()?;
        let mut events = Vec::with_capacity(drifts.len());
        {
            let mut set = tx.prepare_cached(
                "UPDATE components SET drift_since = ?3, drift_detail = ?4
                 WHERE service = ?1 AND name = ?2
                   AND (drift_since IS NULL) != (?3 IS NULL)",
            )?;
            let mut add = tx.prepare_cached(
                "INSERT INTO events (ts, node, service, component, kind, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (service, component, drift) in drifts {
                let changed = set.execute(params![
                    service,
                    component,
                    drift.as_ref().map(|d| d.since_ms),
                    drift.as_ref().map(|d| d.detail.as_str())
                ])? > 0;
                if !changed {
                    events.push(None);
                    continue;
                }
                let (kind, detail) = match drift {
                    Some(d) => ("drift-detected", d.detail.clone()),
                    None => ("drift-cleared", String::new()),
                };
                add.execute(params![now, node, service, component, kind, detail])?;
                events.push(Some(Event {
                    id: tx.last_insert_rowid(),
                    ts_ms: now,
                    node: node.to_string(),
                    service: service.clone(),
                    component: component.clone(),
                    kind: kind.to_string(),
                    detail,
                    by: String::new(),
                }));
            }
        }
        tx.commit()?;
        Ok(events)
    }

    /// The managed component a container id belongs to, if any.
    pub fn component_by_container(&self, container_id: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .prepare_cached("SELECT service, name FROM components WHERE container_id = ?1")?
            .query_row(params![container_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// Replaces the set of unmanaged containers with what a full scan saw.
    pub fn replace_unmanaged(&mut self, seen: &[UnmanagedRow]) -> Result<()> {
        let now = now_ms();
        let tx = self.conn.transaction()?;
        tx.execute(
            "CREATE TEMP TABLE IF NOT EXISTS seen_ids (id TEXT PRIMARY KEY)",
            [],
        )?;
        tx.execute("DELETE FROM seen_ids", [])?;
        {
            let mut mark = tx.prepare_cached("INSERT OR IGNORE INTO seen_ids (id) VALUES (?1)")?;
            let mut upsert = tx.prepare_cached(UPSERT_UNMANAGED)?;
            for c in seen {
                mark.execute(params![c.container_id])?;
                upsert.execute(params![
                    c.container_id,
                    c.name,
                    c.image,
                    c.observed_state,
                    now
                ])?;
            }
        }
        tx.execute(
            "DELETE FROM unmanaged_containers WHERE container_id NOT IN (SELECT id FROM seen_ids)",
            [],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records one unmanaged container seen in an event.
    pub fn upsert_unmanaged(&mut self, c: &UnmanagedRow) -> Result<()> {
        self.conn.execute(
            UPSERT_UNMANAGED,
            params![c.container_id, c.name, c.image, c.observed_state, now_ms()],
        )?;
        Ok(())
    }

    pub fn remove_unmanaged(&mut self, container_id: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM unmanaged_containers WHERE container_id = ?1",
            params![container_id],
        )?;
        Ok(())
    }

    pub fn unmanaged(&self) -> Result<Vec<UnmanagedRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT container_id, name, image, observed_state, first_seen, last_seen
             FROM unmanaged_containers ORDER BY name",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(UnmanagedRow {
                    container_id: r.get(0)?,
                    name: r.get(1)?,
                    image: r.get(2)?,
                    observed_state: r.get(3)?,
                    first_seen_ms: r.get(4)?,
                    last_seen_ms: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Makes a container no service claims the component
    /// `service/component`, desired `running`, running `spec` (what the
    /// container was found to run): the container is left as it is, and its
    /// spec is the component's deployed one (verified: it runs).
    pub fn adopt(
        &mut self,
        container: &AdoptedContainer,
        service: &Name,
        spec: &ComponentDef,
    ) -> std::result::Result<ComponentRow, AdoptError> {
        let now = now_ms();
        let component = &spec.name;
        let tx = self.conn.transaction().map_err(RegistryError::from)?;
        let managed: Option<(String, String)> = tx
            .query_row(
                "SELECT service, name FROM components WHERE container_id = ?1",
                params![container.id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(RegistryError::from)?;
        if let Some((service, component)) = managed {
            return Err(AdoptError::Managed {
                container: container.name.clone(),
                service,
                component,
            });
        }
        let taken: Option<Option<String>> = tx
            .query_row(
                "SELECT container_id FROM components WHERE service = ?1 AND name = ?2",
                params![service.as_str(), component.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(RegistryError::from)?;
        if let Some(Some(existing)) = taken {
            return Err(AdoptError::Taken {
                service: service.to_string(),
                component: component.to_string(),
                container: existing,
            });
        }
        let json = spec_json(spec);
        tx.execute(
            "INSERT INTO services (name, active, created_at, updated_at) VALUES (?1, 1, ?2, ?2)
             ON CONFLICT (name) DO NOTHING",
            params![service.as_str(), now],
        )
        .map_err(RegistryError::from)?;
        tx.execute(
            "INSERT INTO components (service, name, desired_state, observed_state, container_id,
                image, restart, spec, deployed_spec, deployed_at, verified_at, observed_at,
                created_at, updated_at)
             VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?8, ?8, ?8, ?8)
             ON CONFLICT (service, name) DO UPDATE SET desired_state = 'running',
                observed_state = excluded.observed_state, container_id = excluded.container_id,
                image = excluded.image, restart = excluded.restart, spec = excluded.spec,
                deployed_spec = excluded.deployed_spec, deployed_at = excluded.deployed_at,
                verified_at = excluded.verified_at, pending_spec = NULL, pending_since = NULL,
                observed_at = excluded.observed_at, updated_at = excluded.updated_at",
            params![
                service.as_str(),
                component.as_str(),
                container.observed_state,
                container.id,
                spec.image.as_str(),
                spec.restart.as_str(),
                json,
                now
            ],
        )
        .map_err(RegistryError::from)?;
        tx.execute(
            "DELETE FROM unmanaged_containers WHERE container_id = ?1",
            params![container.id],
        )
        .map_err(RegistryError::from)?;
        tx.commit().map_err(RegistryError::from)?;
        self.component(service.as_str(), component.as_str())?
            .ok_or_else(|| AdoptError::NoSuchContainer(container.name.clone()))
    }

    /// Forgets a service and its components (their containers stay, and
    /// show as unmanaged from the next scan on).
    pub fn delete_service(&mut self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM services WHERE name = ?1", params![name])?
            > 0)
    }

    /// Forgets components of `service` that are not in `keep`.
    pub fn delete_components_except(
        &mut self,
        service: &str,
        keep: &[&str],
    ) -> Result<Vec<String>> {
        let existing: Vec<String> = self
            .conn
            .prepare_cached("SELECT name FROM components WHERE service = ?1")?
            .query_map(params![service], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut gone = Vec::new();
        for name in existing.into_iter().filter(|n| !keep.contains(&n.as_str())) {
            self.conn.execute(
                "DELETE FROM components WHERE service = ?1 AND name = ?2",
                params![service, name],
            )?;
            gone.push(name);
        }
        Ok(gone)
    }

    pub fn list_services(&self) -> Result<Vec<ServiceRow>> {
        self.services_where(None)
    }

    pub fn service(&self, name: &str) -> Result<Option<ServiceRow>> {
        Ok(self.services_where(Some(name))?.into_iter().next())
    }

    /// Every service with its components' states, specs left undecoded: the
    /// cheap read behind `mcp list` and every scan.
    pub fn list_service_states(&self) -> Result<Vec<ServiceState>> {
        self.service_states_where(None)
    }

    pub fn service_state(&self, name: &str) -> Result<Option<ServiceState>> {
        Ok(self.service_states_where(Some(name))?.into_iter().next())
    }

    fn service_states_where(&self, name: Option<&str>) -> Result<Vec<ServiceState>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {STATE_COLUMNS}
             FROM components WHERE ?1 IS NULL OR service = ?1 ORDER BY service, name"
        ))?;
        let rows = stmt.query_map(params![name], component_state)?;
        self.group_by_service(name, rows.map(|r| r.map_err(RegistryError::from)))
    }

    fn services_where(&self, name: Option<&str>) -> Result<Vec<ServiceRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {STATE_COLUMNS}, spec, deployed_spec, pending_spec
             FROM components WHERE ?1 IS NULL OR service = ?1 ORDER BY service, name"
        ))?;
        let rows = stmt.query_map(params![name], |r| {
            Ok((
                component_state(r)?,
                r.get::<_, String>(STATE_COLUMN_COUNT)?,
                r.get::<_, Option<String>>(STATE_COLUMN_COUNT + 1)?,
                r.get::<_, Option<String>>(STATE_COLUMN_COUNT + 2)?,
            ))
        })?;
        let rows = rows.map(|row| {
            let (state, spec, deployed, pending) = row?;
            let corrupt = |source| RegistryError::CorruptSpec {
                service: state.service.clone(),
                component: state.name.clone(),
                source,
            };
            let decode = |text: Option<String>| {
                text.map(|t| serde_json::from_str::<ComponentDef>(&t))
                    .transpose()
                    .map_err(corrupt)
            };
            let spec: ComponentDef = serde_json::from_str(&spec).map_err(corrupt)?;
            let deployed_spec = decode(deployed)?;
            let pending_spec = decode(pending)?;
            Ok(ComponentRow {
                state,
                spec,
                deployed_spec,
                pending_spec,
            })
        });
        self.group_by_service(name, rows)
    }

    /// The services (all, or the one named) with their components, given
    /// component rows ordered by service name.
    fn group_by_service<C: HasService>(
        &self,
        name: Option<&str>,
        components: impl Iterator<Item = Result<C>>,
    ) -> Result<Vec<ServiceRow<C>>> {
        let mut services: Vec<ServiceRow<C>> = self
            .conn
            .prepare_cached(
                "SELECT name, active, reconcile FROM services WHERE ?1 IS NULL OR name = ?1
                 ORDER BY name",
            )?
            .query_map(params![name], |r| {
                Ok(ServiceRow {
                    name: r.get(0)?,
                    active: r.get(1)?,
                    reconcile: r.get(2)?,
                    components: Vec::new(),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        // Both are ordered by service name: merge in one pass.
        let mut idx = 0;
        for component in components {
            let component = component?;
            while idx < services.len() && services[idx].name.as_str() < component.service() {
                idx += 1;
            }
            if let Some(service) = services
                .get_mut(idx)
                .filter(|s| s.name == component.service())
            {
                service.components.push(component);
            }
        }
        Ok(services)
    }

    pub fn add_event(
        &mut self,
        node: &str,
        service: &str,
        component: &str,
        kind: &str,
        detail: &str,
        by: &str,
    ) -> Result<Event> {
        let ts_ms = now_ms();
        self.conn.execute(
            "INSERT INTO events (ts, node, service, component, kind, detail, actor)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![ts_ms, node, service, component, kind, detail, by],
        )?;
        Ok(Event {
            id: self.conn.last_insert_rowid(),
            ts_ms,
            node: node.to_string(),
            service: service.to_string(),
            component: component.to_string(),
            kind: kind.to_string(),
            detail: detail.to_string(),
            by: by.to_string(),
        })
    }

    /// The newest `limit` events (of `service`, caused by `by`, when
    /// given), oldest first.
    pub fn events(
        &self,
        service: Option<&str>,
        by: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, ts, node, service, component, kind, detail, actor FROM events
             WHERE (?1 IS NULL OR service = ?1) AND (?2 IS NULL OR actor = ?2)
             ORDER BY id DESC LIMIT ?3",
        )?;
        let mut events = stmt
            .query_map(params![service, by, limit as i64], |r| {
                Ok(Event {
                    id: r.get(0)?,
                    ts_ms: r.get(1)?,
                    node: r.get(2)?,
                    service: r.get(3)?,
                    component: r.get(4)?,
                    kind: r.get(5)?,
                    detail: r.get(6)?,
                    by: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        events.reverse();
        Ok(events)
    }

    /// What image pruning must keep and may consider: the image ids of the
    /// components' containers, the image references of every deployed,
    /// pending and rollback spec, and the images MCP has run.
    pub fn image_references(&self) -> Result<ImageReferences> {
        let mut refs = ImageReferences::default();
        let mut ids = self
            .conn
            .prepare("SELECT image_id FROM components WHERE image_id IS NOT NULL")?;
        for id in ids.query_map([], |r| r.get::<_, String>(0))? {
            refs.ids_in_use.insert(id?);
        }
        let mut specs = self.conn.prepare(
            "SELECT deployed_spec FROM components WHERE deployed_spec IS NOT NULL
             UNION ALL SELECT pending_spec FROM components WHERE pending_spec IS NOT NULL
             UNION ALL SELECT spec FROM spec_history",
        )?;
        for spec in specs.query_map([], |r| r.get::<_, String>(0))? {
            if let Ok(spec) = serde_json::from_str::<ComponentDef>(&spec?) {
                refs.references.insert(spec.image.to_string());
            }
        }
        let mut used = self
            .conn
            .prepare("SELECT image_id, reference FROM images_used ORDER BY image_id")?;
        for row in used.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
            refs.used.push(row?);
        }
        Ok(refs)
    }

    /// Forgets an image MCP ran, once it is removed.
    pub fn forget_image(&mut self, image_id: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM images_used WHERE image_id = ?1", [image_id])?;
        Ok(())
    }

    /// Deletes events older than `retention.max_age_ms` (by their time)
    /// and, per (service, component), all but the newest
    /// `retention.per_component` (by id, the order they were recorded in);
    /// a limit of None is no limit by it. `now_ms` is passed in so tests
    /// can choose it. Returns how many each limit deleted.
    pub fn prune_events(&mut self, now_ms: i64, retention: &Retention) -> Result<Pruned> {
        let tx = self.conn.transaction()?;
        let mut pruned = Pruned::default();
        if let Some(max_age_ms) = retention.max_age_ms {
            pruned.by_age = tx.execute(
                "DELETE FROM events WHERE ts < ?1",
                params![now_ms.saturating_sub(max_age_ms)],
            )?;
        }
        if let Some(keep) = retention.per_component.filter(|n| *n > 0) {
            // Only the components over the limit, each through the
            // events_by_component index: the newest `keep` ids are read, the
            // rest deleted below the oldest of them.
            let over: Vec<(String, String)> = tx
                .prepare(
                    "SELECT service, component FROM events GROUP BY service, component
                     HAVING COUNT(*) > ?1",
                )?
                .query_map(params![keep as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut delete = tx.prepare(
                "DELETE FROM events WHERE service = ?1 AND component = ?2 AND id <
                    (SELECT id FROM events WHERE service = ?1 AND component = ?2
                     ORDER BY id DESC LIMIT 1 OFFSET ?3)",
            )?;
            for (service, component) in over {
                pruned.by_count += delete.execute(params![service, component, keep as i64 - 1])?;
            }
        }
        tx.commit()?;
        Ok(pruned)
    }

    /// A trivial query: the connection answers (the watchdog's round trip).
    pub fn ping(&self) -> Result<()> {
        Ok(self.conn.query_row("SELECT 1", [], |_| Ok(()))?)
    }

    /// The row for a component, if the service and component are known.
    pub fn component(&self, service: &str, component: &str) -> Result<Option<ComponentRow>> {
        Ok(self
            .service(service)?
            .and_then(|s| s.components.into_iter().find(|c| c.state.name == component)))
    }

    #[cfg(test)]
    fn conn(&self) -> &Connection {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_service;

    fn def(active: bool) -> ServiceDef {
        parse_service(
            Path::new("svc.toml"),
            &format!(
                "name = \"svc\"\nnode = \"n1\"\nactive = {active}\n\
                 [[components]]\nname = \"api\"\nimage = \"img:1\"\n\
                 [[components]]\nname = \"web\"\nimage = \"web:1\"\n"
            ),
        )
        .unwrap()
    }

    #[test]
    fn migrations_are_recorded_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcp.db");
        let reg = Registry::open(&path).unwrap();
        assert_eq!(reg.schema_version().unwrap(), latest());
        drop(reg);
        let reg = Registry::open(&path).unwrap();
        assert_eq!(reg.schema_version().unwrap(), latest());
        let mode: String = reg
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn desired_state_is_constrained() {
        let mut reg = Registry::open_in_memory().unwrap();
        reg.push_definition(&def(true), None, DesiredState::Running)
            .unwrap();
        let err = reg.conn().execute(
            "UPDATE components SET desired_state = 'sometimes' WHERE name = 'api'",
            [],
        );
        assert!(err.is_err());
    }

    /// The images MCP ran are kept with the reference they were deployed as.
    #[test]
    fn image_references_name_what_is_deployed_and_what_ran() {
        let mut reg = Registry::open_in_memory().unwrap();
        let d = def(true);
        reg.push_definition(&d, None, DesiredState::Running)
            .unwrap();
        let facts = ContainerFacts {
            container_id: Some("abc".into()),
            observed_state: "running".into(),
            created_from: Some(d.components[0].clone()),
            verified: true,
            image_id: Some("sha256:1".into()),
        };
        reg.record_container("svc", "api", &facts).unwrap();
        let refs = reg.image_references().unwrap();
        assert!(refs.ids_in_use.contains("sha256:1"), "{refs:?}");
        let image = d.components[0].image.to_string();
        assert!(refs.references.contains(&image), "{refs:?}");
        assert_eq!(refs.used, [("sha256:1".to_string(), image)]);
        reg.forget_image("sha256:1").unwrap();
        assert!(reg.image_references().unwrap().used.is_empty());
    }

    #[test]
    fn push_record_and_list() {
        let mut reg = Registry::open_in_memory().unwrap();
        let d = def(true);
        reg.push_definition(&d, None, DesiredState::Running)
            .unwrap();
        reg.record_container(
            "svc",
            "api",
            &ContainerFacts {
                container_id: Some("abc".into()),
                observed_state: "running".into(),
                created_from: Some(d.components[0].clone()),
                verified: true,
                image_id: None,
            },
        )
        .unwrap();
        let services = reg.list_services().unwrap();
        assert_eq!(services.len(), 1);
        let api = &services[0].components[0];
        assert_eq!(api.state.container_id.as_deref(), Some("abc"));
        assert_eq!(api.state.image.as_deref(), Some("img:1"));
        assert_eq!(api.deployed_spec.as_ref(), Some(&d.components[0]));
        assert!(api.state.deployed_at_ms.is_some());
        let web = &services[0].components[1];
        assert_eq!(web.deployed_spec, None);
        assert_eq!(web.state.observed_state, "unknown");

        assert_eq!(
            reg.set_desired("svc", Some("web"), DesiredState::Stopped)
                .unwrap(),
            1
        );
        let svc = reg.service("svc").unwrap().unwrap();
        assert!(svc.active);
        assert_eq!(svc.components[1].state.desired_state, DesiredState::Stopped);
        reg.set_desired("svc", None, DesiredState::Stopped).unwrap();
        assert!(!reg.service("svc").unwrap().unwrap().active);
    }

    #[test]
    fn events_come_back_oldest_first() {
        let mut reg = Registry::open_in_memory().unwrap();
        for i in 0..5 {
            reg.add_event("n1", "svc", "api", "deployed", &format!("#{i}"), "alice")
                .unwrap();
        }
        reg.add_event("n1", "other", "", "deployed", "", "bob")
            .unwrap();
        let ev = reg.events(Some("svc"), None, 3).unwrap();
        let details: Vec<_> = ev.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(details, ["#2", "#3", "#4"]);
        assert_eq!(reg.events(None, None, 100).unwrap().len(), 6);
        let bobs = reg.events(None, Some("bob"), 100).unwrap();
        assert_eq!(bobs.len(), 1);
        assert_eq!(bobs[0].service, "other");
    }

    fn latest() -> i64 {
        MIGRATIONS.last().map_or(0, |m| m.0)
    }

    const DAY_MS: i64 = 86_400_000;

    /// Adds an event at `ts_ms`; its detail is `detail`.
    fn event_at(reg: &mut Registry, service: &str, component: &str, detail: &str, ts_ms: i64) {
        let e = reg
            .add_event("n1", service, component, "tick", detail, "")
            .unwrap();
        reg.conn()
            .execute(
                "UPDATE events SET ts = ?1 WHERE id = ?2",
                params![ts_ms, e.id],
            )
            .unwrap();
    }

    fn details(reg: &Registry, service: &str, component: &str) -> Vec<String> {
        reg.events(Some(service), None, 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.component == component)
            .map(|e| e.detail)
            .collect()
    }

    #[test]
    fn events_are_pruned_by_age_and_per_component() {
        let mut reg = Registry::open_in_memory().unwrap();
        let now = 1_000 * DAY_MS;
        let fresh = now - DAY_MS;
        let old = now - 11 * DAY_MS;
        for i in 0..5 {
            event_at(&mut reg, "svc", "api", &format!("api#{i}"), fresh);
        }
        event_at(&mut reg, "svc", "web", "web-old", old);
        event_at(&mut reg, "svc", "web", "web-new", fresh);
        event_at(&mut reg, "other", "api", "other-old", old);
        for i in 0..3 {
            event_at(&mut reg, "other", "api", &format!("other#{i}"), fresh);
        }
        event_at(&mut reg, "", "", "node", fresh);
        let retention = Retention {
            max_age_ms: Some(10 * DAY_MS),
            per_component: Some(3),
        };

        let pruned = reg.prune_events(now, &retention).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                by_age: 2,
                by_count: 2
            }
        );
        assert_eq!(pruned.total(), 4);
        // The newest of each component stay, in order.
        assert_eq!(details(&reg, "svc", "api"), ["api#2", "api#3", "api#4"]);
        assert_eq!(details(&reg, "svc", "web"), ["web-new"]);
        assert_eq!(
            details(&reg, "other", "api"),
            ["other#0", "other#1", "other#2"]
        );
        assert_eq!(details(&reg, "", ""), ["node"]);
        // Nothing left to prune.
        assert_eq!(reg.prune_events(now, &retention).unwrap().total(), 0);

        // Ten days later, by age alone: everything recorded at `fresh` goes.
        let by_age = Retention {
            max_age_ms: Some(10 * DAY_MS),
            per_component: None,
        };
        let later = now + 10 * DAY_MS;
        event_at(&mut reg, "svc", "api", "api-later", later);
        assert_eq!(
            reg.prune_events(later, &by_age).unwrap(),
            Pruned {
                by_age: 8,
                by_count: 0
            }
        );
        assert_eq!(details(&reg, "svc", "api"), ["api-later"]);

        // By count alone, and no limit at all.
        for i in 0..3 {
            event_at(&mut reg, "svc", "api", &format!("again#{i}"), 0);
        }
        let by_count = Retention {
            max_age_ms: None,
            per_component: Some(1),
        };
        assert!(!by_count.is_off());
        assert_eq!(reg.prune_events(later, &by_count).unwrap().by_count, 3);
        assert_eq!(details(&reg, "svc", "api"), ["again#2"]);
        let off = Retention::default();
        assert!(off.is_off());
        event_at(&mut reg, "svc", "api", "ancient", 0);
        assert_eq!(reg.prune_events(later, &off).unwrap().total(), 0);
        assert_eq!(details(&reg, "svc", "api").len(), 2);
    }

    /// Pruning reads the events through the indexes of migration 7, not
    /// by scanning the table.
    #[test]
    fn pruning_uses_the_retention_indexes() {
        let reg = Registry::open_in_memory().unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = reg
                .conn()
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let rows: Vec<String> = stmt
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            rows.join("; ")
        };
        let by_age = plan("DELETE FROM events WHERE ts < 5");
        assert!(by_age.contains("events_by_ts"), "{by_age}");
        let over = plan(
            "SELECT service, component FROM events GROUP BY service, component
             HAVING COUNT(*) > 3",
        );
        assert!(over.contains("events_by_component"), "{over}");
        assert!(!over.contains("TEMP B-TREE"), "{over}");
        let by_count = plan(
            "DELETE FROM events WHERE service = 'a' AND component = 'b' AND id <
                (SELECT id FROM events WHERE service = 'a' AND component = 'b'
                 ORDER BY id DESC LIMIT 1 OFFSET 2)",
        );
        assert!(by_count.contains("events_by_component"), "{by_count}");
        assert!(!by_count.contains("SCAN events"), "{by_count}");
    }

    /// Migrations are applied by what is recorded: a database that got a
    /// later migration first (two branches) still gets the one it missed.
    #[test]
    fn a_migration_missed_in_between_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gap.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                    applied_at INTEGER NOT NULL)",
            )
            .unwrap();
            for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 != 5) {
                conn.execute_batch(sql).unwrap();
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?1, ?2, 0)",
                    params![version, name],
                )
                .unwrap();
            }
        }
        let mut reg = Registry::open(&path).unwrap();
        assert_eq!(reg.schema_version().unwrap(), latest());
        // 0005 added events.actor.
        reg.add_event("n1", "svc", "api", "deployed", "", "alice")
            .unwrap();
        assert_eq!(reg.events(None, Some("alice"), 10).unwrap().len(), 1);
        let recorded: i64 = reg
            .conn()
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(recorded, MIGRATIONS.len() as i64);
    }

    /// A database made by the first schema version opens with every later
    /// migration applied and nothing lost.
    #[test]
    fn migrates_a_version_one_database_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                    applied_at INTEGER NOT NULL)",
            )
            .unwrap();
            conn.execute_batch(MIGRATIONS[0].2).unwrap();
            conn.execute(
                "INSERT INTO schema_migrations VALUES (1, '0001_initial', 0)",
                [],
            )
            .unwrap();
            let spec = spec_json(&def(true).components[0]);
            conn.execute_batch(&format!(
                "INSERT INTO services VALUES ('svc', 1, 1, 1);
                 INSERT INTO components (service, name, desired_state, observed_state,
                    container_id, image, restart, spec, deployed_spec, deployed_at, observed_at,
                    created_at, updated_at)
                 VALUES ('svc', 'api', 'stopped', 'exited', 'c1', 'img:1', 'no', '{spec}',
                    '{spec}', 5, 6, 1, 1);
                 INSERT INTO events (ts, node, service, component, kind, detail)
                    VALUES (7, 'n1', 'svc', 'api', 'deployed', 'old');"
            ))
            .unwrap();
        }
        let reg = Registry::open(&path).unwrap();
        assert_eq!(reg.schema_version().unwrap(), latest());
        let api = reg.component("svc", "api").unwrap().unwrap();
        assert_eq!(api.state.desired_state, DesiredState::Stopped);
        assert_eq!(api.state.container_id.as_deref(), Some("c1"));
        assert_eq!(api.deployed_spec.as_ref(), Some(&def(true).components[0]));
        assert_eq!(api.state.deployed_at_ms, Some(5));
        assert_eq!(api.state.drift, None);
        assert_eq!(reg.events(None, None, 10).unwrap()[0].detail, "old");
        assert!(reg.unmanaged().unwrap().is_empty());
    }

    #[test]
    fn backup_is_a_consistent_copy_while_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcp.db");
        let mut reg = Registry::open(&path).unwrap();
        reg.push_definition(&def(true), None, DesiredState::Running)
            .unwrap();
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || {
            let mut reg = Registry::open(&writer_path).unwrap();
            for i in 0..300 {
                reg.add_event("n1", "svc", "api", "tick", &i.to_string(), "")
                    .unwrap();
            }
        });
        let dest = dir.path().join("copy.db");
        let version = Registry::backup(&path, &dest).unwrap();
        writer.join().unwrap();
        assert_eq!(version, latest());
        let copy = Registry::open(&dest).unwrap();
        assert_eq!(copy.list_services().unwrap().len(), 1);
        // Whatever the copy caught of the writer, it caught in order.
        let ticks: Vec<i64> = copy
            .events(None, None, 1000)
            .unwrap()
            .iter()
            .map(|e| e.detail.parse().unwrap())
            .collect();
        assert!(
            ticks.iter().enumerate().all(|(i, t)| *t == i as i64),
            "{ticks:?}"
        );
        assert!(Registry::backup(&dir.path().join("missing.db"), &dest).is_err());
    }

    /// A deploy in progress is recorded before the container is replaced;
    /// the outcome clears it, and only a verified spec is a rollback target.
    #[test]
    fn pending_and_verified_specs() {
        let mut reg = Registry::open_in_memory().unwrap();
        let d = def(true);
        reg.push_definition(&d, None, DesiredState::Running)
            .unwrap();
        let v1 = d.components[0].clone();
        let mut v2 = v1.clone();
        v2.image = "img:2".parse().unwrap();
        let facts = |spec: &ComponentDef, verified| ContainerFacts {
            container_id: Some("c".into()),
            observed_state: "running".into(),
            created_from: Some(spec.clone()),
            verified,
            image_id: None,
        };
        reg.record_container("svc", "api", &facts(&v1, true))
            .unwrap();
        let state = |reg: &Registry| reg.component("svc", "api").unwrap().unwrap();
        assert!(state(&reg).state.verified());

        reg.begin_change("svc", "api", &v2).unwrap();
        let row = state(&reg);
        assert_eq!(row.pending_spec.as_ref(), Some(&v2));
        assert!(!row.state.verified(), "pending is not verified");
        // A crash: the new container's label is all that says it runs v2.
        reg.record_observed(&[Observation {
            service: "svc".into(),
            component: "api".into(),
            container_id: Some("c2".into()),
            observed_state: "running".into(),
            created_from: Some(v2.clone()),
        }])
        .unwrap();
        let row = state(&reg);
        assert_eq!(row.deployed_spec.as_ref(), Some(&v2));
        assert_eq!(row.state.verified_at_ms, None);
        assert_eq!(
            reg.rollback_target("svc", "api", Some(&v2)).unwrap(),
            Some(v1.clone())
        );

        // v2 kept unhealthy: still unverified, and never a rollback target.
        reg.record_container("svc", "api", &facts(&v2, false))
            .unwrap();
        let row = state(&reg);
        assert_eq!(row.pending_spec, None);
        assert!(!row.state.verified());
        assert_eq!(
            reg.rollback_target("svc", "api", None).unwrap(),
            Some(v1.clone())
        );
        let mut v3 = v1.clone();
        v3.image = "img:3".parse().unwrap();
        assert_eq!(
            reg.rollback_target("svc", "api", Some(&v3)).unwrap(),
            Some(v1)
        );
    }

    /// A container's label is the witness of what it runs.
    #[test]
    fn an_observed_spec_label_wins() {
        let mut reg = Registry::open_in_memory().unwrap();
        let old = def(true);
        reg.push_definition(&old, None, DesiredState::Running)
            .unwrap();
        let mut new = old.components[0].clone();
        new.image = "img:2".parse().unwrap();
        reg.record_observed(&[Observation {
            service: "svc".into(),
            component: "api".into(),
            container_id: Some("c2".into()),
            observed_state: "running".into(),
            created_from: Some(new.clone()),
        }])
        .unwrap();
        let api = reg.component("svc", "api").unwrap().unwrap();
        assert_eq!(api.deployed_spec, Some(new));
        assert_eq!(api.state.image.as_deref(), Some("img:2"));
        assert!(api.state.deployed_at_ms.is_some());
        // Without a label, the record stays.
        reg.record_observed(&[Observation {
            service: "svc".into(),
            component: "api".into(),
            container_id: None,
            observed_state: "absent".into(),
            created_from: None,
        }])
        .unwrap();
        assert_eq!(
            reg.component("svc", "api")
                .unwrap()
                .unwrap()
                .state
                .image
                .as_deref(),
            Some("img:2")
        );
    }
}
