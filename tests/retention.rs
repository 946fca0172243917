//! Event retention with the real binaries against a real podman: events
//! beyond `[registry] keep_events_per_component` are pruned in the
//! background, and each pruning is an `events-pruned` event by mcp-agent.

mod common;

use std::time::Duration;

use common::{eventually, Agent, Operator, Podman, TEST_IMAGE};
use serde_json::Value;

fn events(operator: &Operator, service: Option<&str>) -> Vec<Value> {
    let mut args = vec!["events"];
    args.extend(service);
    args.extend(["--limit", "1000", "-o", "json"]);
    operator
        .ok(&args)
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn events_beyond_the_limit_per_component_are_pruned_and_the_pruning_is_an_event() {
    let podman = Podman::start();
    let agent = Agent::start_with_config(
        &podman,
        "n1",
        Some("[registry]\nkeep_events_per_component = 3\nprune_interval_secs = 1\n"),
    );
    let operator = Operator::new(&[&agent]);
    operator.define(
        "kept",
        &format!(
            "name = \"kept\"\nnode = \"n1\"\n\n[[components]]\nname = \"main\"\n\
             image = \"{TEST_IMAGE}\"\ncmd = [\"/bin/busybox\", \"sleep\", \"3600\"]\n"
        ),
    );
    // deployed, then stopped and started twice: five events of kept/main.
    operator.ok(&["deploy", "kept"]);
    for _ in 0..2 {
        operator.ok(&["stop", "kept"]);
        operator.ok(&["start", "kept"]);
    }

    let (main, pruned) = eventually(
        "kept/main pruned to 3 events, and an events-pruned event",
        Duration::from_secs(20),
        || {
            let main: Vec<Value> = events(&operator, Some("kept"))
                .into_iter()
                .filter(|e| e["component"] == "main")
                .collect();
            let pruned: Vec<Value> = events(&operator, None)
                .into_iter()
                .filter(|e| e["kind"] == "events-pruned")
                .collect();
            (main.len() <= 3 && !kinds(&main).contains(&"deployed".to_string()))
                .then_some(())
                .and((!pruned.is_empty()).then_some((main, pruned)))
        },
    );
    // The newest three are what is left, in order.
    assert_eq!(kinds(&main), ["started", "stopped", "started"], "{main:?}");
    let first = &pruned[0];
    assert_eq!(first["by"], "mcp-agent", "{first}");
    assert_eq!(first["service"], "", "{first}");
    assert_eq!(first["component"], "", "{first}");
    let detail = first["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("keep_events_per_component = 3") && detail.contains("by count"),
        "{detail}"
    );
}
