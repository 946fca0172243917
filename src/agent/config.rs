//! The agent's optional config file (`--config`): watch and alert settings,
//! which do not fit flags (the alert command is an argv list).
//!
//! ```toml
//! [watch]
//! scan_interval_secs = 60     # full scan, besides the event stream
//! flap_exits = 3              # this many exits ...
//! flap_window_secs = 600      # ... within this window is flapping
//!
//! [alert]
//! command = ["/usr/local/bin/page-ops", "--team", "infra"]   # no shell
//! rate_limit_secs = 600       # at most one alert per component per window
//! timeout_secs = 10           # then the command is killed and recorded as failed
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde::Deserialize;

use crate::actors::{AlertSettings, WatchSettings};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub watch: WatchSection,
    #[serde(default)]
    pub alert: Option<AlertSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchSection {
    pub scan_interval_secs: u64,
    pub flap_exits: usize,
    pub flap_window_secs: u64,
}

impl Default for WatchSection {
    fn default() -> Self {
        let d = WatchSettings::default();
        WatchSection {
            scan_interval_secs: d.scan_interval.as_secs(),
            flap_exits: d.flap_exits,
            flap_window_secs: d.flap_window.as_secs(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSection {
    pub command: Vec<String>,
    #[serde(default = "default_rate_limit")]
    pub rate_limit_secs: u64,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_rate_limit() -> u64 {
    600
}

fn default_timeout() -> u64 {
    10
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the agent config {}", path.display()))?;
        let config: AgentConfig = crate::spec::parse_toml(path, &text)?;
        ensure!(
            config.watch.scan_interval_secs > 0,
            "{}: watch.scan_interval_secs must be at least 1",
            path.display()
        );
        ensure!(
            config.watch.flap_exits > 0,
            "{}: watch.flap_exits must be at least 1",
            path.display()
        );
        if let Some(alert) = &config.alert {
            ensure!(
                !alert.command.is_empty() && !alert.command[0].is_empty(),
                "{}: alert.command must name a program",
                path.display()
            );
            ensure!(
                alert.timeout_secs > 0,
                "{}: alert.timeout_secs must be at least 1",
                path.display()
            );
        }
        Ok(config)
    }

    pub fn watch_settings(&self) -> WatchSettings {
        WatchSettings {
            scan_interval: Duration::from_secs(self.watch.scan_interval_secs),
            flap_exits: self.watch.flap_exits,
            flap_window: Duration::from_secs(self.watch.flap_window_secs),
            alert: self.alert.as_ref().map(|a| AlertSettings {
                command: a.command.clone(),
                rate_limit: Duration::from_secs(a.rate_limit_secs),
                timeout: Duration::from_secs(a.timeout_secs),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "").unwrap();
        let c = AgentConfig::load(&path).unwrap();
        assert_eq!(c.watch_settings().scan_interval, Duration::from_secs(60));
        assert!(c.watch_settings().alert.is_none());

        std::fs::write(&path, "[alert]\ncommand = [\"/bin/true\"]\n").unwrap();
        let alert = AgentConfig::load(&path)
            .unwrap()
            .watch_settings()
            .alert
            .unwrap();
        assert_eq!(alert.rate_limit, Duration::from_secs(600));

        std::fs::write(&path, "[watch]\nscan_interval = 5\n").unwrap();
        let err = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("agent.toml:2:1"), "{err}");

        std::fs::write(&path, "[alert]\ncommand = []\n").unwrap();
        assert!(AgentConfig::load(&path).is_err());
    }
}
