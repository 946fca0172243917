//! The alert command: argv without a shell, facts in MCP_ALERT_*, at most
//! once per component per window, killed after its timeout.

use super::*;

/// An alert command: argv, run without a shell, with the facts in
/// MCP_ALERT_* environment variables.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub command: Vec<String>,
    /// At most one alert per component in this window.
    pub rate_limit: Duration,
    /// A command still running after this is killed and recorded as failed.
    pub timeout: Duration,
}

impl WatchActor {
    /// Runs the alert command for `key`, unless one ran within the rate
    /// limit. Some(the `alert-sent` event's detail) when it runs: the
    /// caller records that event in order with what caused it.
    pub(super) fn alert(
        &mut self,
        key: &Key,
        kind: &str,
        detail: &str,
        ctx: &mut Context<Self>,
    ) -> Option<String> {
        let alert = self.settings.alert.clone()?;
        let now = now_ms();
        let limit_ms = alert.rate_limit.as_millis() as i64;
        if self
            .last_alert
            .get(key)
            .is_some_and(|last| now - last < limit_ms)
        {
            tracing::debug!(service = %key.0, component = %key.1, kind, "alert rate-limited");
            return None;
        }
        self.last_alert.insert(key.clone(), now);
        let registry = self.registry.clone();
        let facts = AlertFacts {
            node: self.node.clone(),
            service: key.0.clone(),
            component: key.1.clone(),
            kind: kind.to_string(),
            detail: detail.to_string(),
        };
        ctx.spawn(
            async move {
                if let Err(why) = run_alert(&alert, &facts).await {
                    tracing::warn!(service = %facts.service, component = %facts.component, "alert failed: {why}");
                    record_event(&registry, &facts.service, &facts.component, "alert-failed", &why).await;
                }
            }
            .into_actor(self),
        );
        Some(format!("{kind}: {detail}"))
    }
}

struct AlertFacts {
    node: String,
    service: String,
    component: String,
    kind: String,
    detail: String,
}

/// Runs the alert command; Err says why it failed.
async fn run_alert(alert: &AlertSettings, facts: &AlertFacts) -> Result<(), String> {
    let (program, args) = alert
        .command
        .split_first()
        .ok_or_else(|| "the alert command is empty".to_string())?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("MCP_ALERT_NODE", &facts.node)
        .env("MCP_ALERT_SERVICE", &facts.service)
        .env("MCP_ALERT_COMPONENT", &facts.component)
        .env("MCP_ALERT_KIND", &facts.kind)
        .env("MCP_ALERT_DETAIL", &facts.detail)
        .env("MCP_ALERT_TIME_MS", now_ms().to_string())
        // The alert command is not the agent: it must not speak to systemd
        // in the agent's name.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match tokio::time::timeout(alert.timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{program} exited with {status}")),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            Err(format!(
                "{program} did not finish within {}s and was killed",
                alert.timeout.as_secs()
            ))
        }
    }
}

/// Run the alert command for something outside the watch's own findings
/// (a boot stage that timed out), and record `alert-sent` when it runs.
/// `key` may be empty (an alert about the node).
#[derive(Debug, Clone)]
pub struct RaiseAlert {
    pub key: Key,
    pub kind: String,
    pub detail: String,
}

impl Message for RaiseAlert {
    type Result = ();
}

impl Handler<RaiseAlert> for WatchActor {
    type Result = ();
    fn handle(&mut self, msg: RaiseAlert, ctx: &mut Context<Self>) {
        let Some(sent) = self.alert(&msg.key, &msg.kind, &msg.detail, ctx) else {
            return;
        };
        let registry = self.registry.clone();
        let (service, component) = msg.key;
        let record = async move {
            let agent = crate::registry::AGENT;
            record_event_by(&registry, &service, &component, "alert-sent", &sent, agent).await;
        };
        ctx.wait(record.into_actor(self));
    }
}
