//! The order of a service's components within one operation: each waits
//! for the components it depends on (`depends_on`) to succeed, and the rest
//! run concurrently. Stopping goes the other way round.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use futures::future::{join_all, FutureExt};
use tokio::sync::oneshot;

use super::super::{AgentError, ComponentOutcome};
use crate::names::Name;
use crate::spec::ComponentDef;

/// What each component depends on.
pub type Dependencies = HashMap<Name, Vec<Name>>;

/// The dependencies `specs` declare.
pub fn dependencies<'a>(specs: impl IntoIterator<Item = &'a ComponentDef>) -> Dependencies {
    specs
        .into_iter()
        .map(|c| (c.name.clone(), c.depends_on.clone()))
        .collect()
}

/// The same edges reversed: what depends on each component (to stop those
/// first).
pub fn dependents(deps: &Dependencies) -> Dependencies {
    let mut reversed: Dependencies = HashMap::new();
    for (component, needs) in deps {
        for dep in needs {
            reversed
                .entry(dep.clone())
                .or_default()
                .push(component.clone());
        }
    }
    reversed
}

/// The outcome of a component that was not worked on because `dep` failed.
fn held_back(component: &Name, dep: &Name) -> ComponentOutcome {
    ComponentOutcome {
        component: component.to_string(),
        result: Err(AgentError::FailedPrecondition(format!(
            "not started: {dep}, which it depends on, failed"
        ))),
        container_id: None,
        observed_state: "unchanged".to_string(),
    }
}

/// Runs `work` for each target once the targets it depends on have
/// succeeded (None counts as success: nothing needed doing). A target whose
/// dependency failed is held back. Outcomes in the targets' order. Edges
/// that go round in a circle (specs deployed at different times can make
/// one) are ignored, with a warning: every target then runs at once.
pub async fn in_order<F, Fut>(
    service: &Name,
    targets: Vec<Name>,
    deps: &Dependencies,
    work: F,
) -> Vec<Option<ComponentOutcome>>
where
    F: Fn(Name) -> Fut,
    Fut: Future<Output = Option<ComponentOutcome>>,
{
    let among: BTreeMap<&Name, &[Name]> = targets
        .iter()
        .map(|t| (t, deps.get(t).map_or(&[][..], Vec::as_slice)))
        .collect();
    let acyclic = match crate::spec::dependency_order(&among) {
        Ok(_) => true,
        Err(cycle) => {
            let cycle: Vec<&str> = cycle.iter().map(Name::as_str).collect();
            tracing::warn!(
                %service,
                "depends_on goes round in a circle ({}): ignored for this operation",
                cycle.join(" -> ")
            );
            false
        }
    };
    let mut senders = Vec::with_capacity(targets.len());
    let mut done = HashMap::new();
    for target in &targets {
        let (tx, rx) = oneshot::channel::<bool>();
        senders.push(tx);
        done.insert(target.clone(), rx.shared());
    }
    let waits: Vec<Vec<_>> = targets
        .iter()
        .map(|target| {
            let needs = if acyclic { among[target] } else { &[][..] };
            needs
                .iter()
                .filter_map(|dep| done.get(dep).map(|rx| (dep.clone(), rx.clone())))
                .collect()
        })
        .collect();
    drop(among);
    let work = &work;
    let runs =
        targets
            .into_iter()
            .zip(senders)
            .zip(waits)
            .map(|((target, tx), waits)| async move {
                for (dep, succeeded) in waits {
                    if !succeeded.await.unwrap_or(false) {
                        let _ = tx.send(false);
                        return Some(held_back(&target, &dep));
                    }
                }
                let outcome = work(target).await;
                let _ = tx.send(outcome.as_ref().is_none_or(|o| o.result.is_ok()));
                outcome
            });
    join_all(runs).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn ok(c: &Name) -> Option<ComponentOutcome> {
        Some(ComponentOutcome {
            component: c.to_string(),
            result: Ok("done".into()),
            container_id: None,
            observed_state: "running".into(),
        })
    }

    async fn run(
        deps: &Dependencies,
        targets: &[&str],
        failing: &'static str,
    ) -> (Vec<String>, Vec<Option<ComponentOutcome>>) {
        let started = Arc::new(Mutex::new(Vec::new()));
        let outcomes = in_order(
            &name("svc"),
            targets.iter().map(|t| name(t)).collect(),
            deps,
            |c| {
                let started = started.clone();
                async move {
                    // Give whatever does not wait a chance to overtake.
                    tokio::task::yield_now().await;
                    started.lock().unwrap().push(c.to_string());
                    let mut out = ok(&c);
                    if c.as_str() == failing {
                        out.as_mut().unwrap().result = Err(AgentError::Internal("no".into()));
                    }
                    out
                }
            },
        )
        .await;
        let order = started.lock().unwrap().clone();
        (order, outcomes)
    }

    fn chain() -> Dependencies {
        // web -> api -> db
        [
            (name("web"), vec![name("api")]),
            (name("api"), vec![name("db")]),
            (name("db"), vec![]),
        ]
        .into()
    }

    #[tokio::test]
    async fn dependencies_go_first_and_a_failure_holds_back_what_needs_it() {
        let (order, outcomes) = run(&chain(), &["web", "api", "db"], "").await;
        assert_eq!(order, ["db", "api", "web"]);
        assert!(outcomes.iter().all(|o| o.as_ref().unwrap().result.is_ok()));

        let (order, outcomes) = run(&chain(), &["web", "api", "db"], "api").await;
        assert_eq!(order, ["db", "api"]);
        let web = outcomes[0].as_ref().unwrap();
        assert!(
            matches!(&web.result, Err(AgentError::FailedPrecondition(m)) if m.contains("api")),
            "{web:?}"
        );
    }

    #[tokio::test]
    async fn stopping_goes_the_other_way_and_non_targets_are_not_waited_for() {
        let (order, _) = run(&dependents(&chain()), &["web", "api", "db"], "").await;
        assert_eq!(order, ["web", "api", "db"]);
        // api alone: db is not part of this operation.
        let (order, _) = run(&chain(), &["api"], "").await;
        assert_eq!(order, ["api"]);
    }

    #[tokio::test]
    async fn a_circle_is_ignored_rather_than_waited_on_forever() {
        let deps: Dependencies =
            [(name("a"), vec![name("b")]), (name("b"), vec![name("a")])].into();
        let (order, outcomes) = run(&deps, &["a", "b"], "").await;
        assert_eq!(order.len(), 2);
        assert!(outcomes.iter().all(|o| o.as_ref().unwrap().result.is_ok()));
    }
}
