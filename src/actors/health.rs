//! Health checks (`[components.health]`): of a freshly started container,
//! probe until it passes, or until `retries` probes in a row have failed
//! after the start period (the watch keeps probing afterwards, one probe at
//! a time: `probe_once`). Probes: a command run in the container (through
//! the RuntimeActor), an HTTP GET, or a TCP connect from the agent's host.

use std::time::{Duration, Instant};

use actix::Addr;

use super::runtime::{Exec, RuntimeActor};
use crate::spec::HealthCheck;

/// Ok: how long it took to become healthy. Err: why it is not.
pub async fn wait_healthy(
    runtime: &Addr<RuntimeActor>,
    container_id: &str,
    check: &HealthCheck,
) -> Result<Duration, String> {
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(check.timeout.get())
        .build()
        .map_err(|e| format!("cannot build the HTTP probe: {e}"))?;
    let mut failures = 0u32;
    loop {
        match probe_once(runtime, &http, container_id, check).await {
            Ok(()) => return Ok(started.elapsed()),
            Err(why) => {
                if started.elapsed() >= check.start_period.get() {
                    failures += 1;
                    if failures >= check.retries {
                        return Err(format!(
                            "not healthy: {failures} probes in a row failed, the last: {why}"
                        ));
                    }
                }
            }
        }
        tokio::time::sleep(check.interval.get()).await;
    }
}

/// One probe, within the check's timeout.
pub async fn probe_once(
    runtime: &Addr<RuntimeActor>,
    http: &reqwest::Client,
    container_id: &str,
    check: &HealthCheck,
) -> Result<(), String> {
    match tokio::time::timeout(
        check.timeout.get(),
        probe(runtime, http, container_id, check),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {}", check.timeout)),
    }
}

async fn probe(
    runtime: &Addr<RuntimeActor>,
    http: &reqwest::Client,
    container_id: &str,
    check: &HealthCheck,
) -> Result<(), String> {
    if let Some(url) = &check.http {
        let answer = http
            .get(url.as_str())
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        return if answer.status().is_success() || answer.status().is_redirection() {
            Ok(())
        } else {
            Err(format!("GET {url}: {}", answer.status()))
        };
    }
    if let Some(target) = &check.tcp {
        return tokio::net::TcpStream::connect(target.as_str())
            .await
            .map(drop)
            .map_err(|e| format!("connect {target}: {e}"));
    }
    let code = runtime
        .send(Exec {
            id: container_id.to_string(),
            cmd: check.cmd.clone(),
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if code == 0 {
        Ok(())
    } else {
        Err(format!("{:?} exited with {code}", check.cmd.join(" ")))
    }
}
