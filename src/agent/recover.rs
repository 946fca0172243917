//! `mcp-agent recover`: the agent's recovery at start, on demand, with the
//! agent stopped (the state directory's lock says so). It builds the same
//! actor tree as `serve`, runs the recovery (finishing interrupted deploys
//! first), prints what it did and exits: 1 when a component failed.

use anyhow::{bail, Result};

use super::node::Node;
use super::RecoverArgs;
use crate::actors::recovery::{self, RecoveryReport, RecoverySettings};
use crate::actors::{self, supervisor::Fatal};

pub fn run(args: RecoverArgs) -> Result<()> {
    let node = Node::open(&args.on, &[])?;
    let boot = node.settings.recovery.boot.clone();
    let mut settings = node.settings.clone();
    // The tree must not run its own recovery at start: this is it.
    settings.recovery = RecoverySettings::off();
    let system = actix_rt::System::new();
    let dry_run = args.dry_run;
    let report = system.block_on(async move {
        let handles = actors::start(
            node.registry,
            node.db_path.clone(),
            node.runtime,
            settings,
            Fatal::default(),
        );
        if !dry_run {
            recovery::finish_interrupted(handles.clone()).await;
        }
        recovery::recover(&handles, &boot, dry_run).await
    });
    let failed = print(&report, dry_run);
    if failed > 0 {
        bail!("{failed} component(s) could not be recovered");
    }
    Ok(())
}

/// One line per component acted on, and per boot stage; how many failed.
fn print(report: &RecoveryReport, dry_run: bool) -> usize {
    let mut failed = 0;
    let mut acted = 0;
    for (service, outcome) in &report.services {
        let outcomes = match outcome {
            Ok(outcomes) => outcomes,
            Err(e) => {
                failed += 1;
                println!("{service}: FAILED: {e}");
                continue;
            }
        };
        for o in outcomes {
            acted += 1;
            match &o.result {
                Ok(done) => println!("{service}/{}: {done}", o.component),
                Err(e) => {
                    failed += 1;
                    println!("{service}/{}: FAILED: {e}", o.component);
                }
            }
        }
    }
    for (stage, gate) in &report.stages {
        match gate {
            Ok(ready) => println!("boot stage {stage}: {ready}"),
            Err(waiting) => println!("boot stage {stage}: timed out: {waiting}"),
        }
    }
    if acted == 0 {
        println!("everything that should run is running");
    } else if dry_run {
        println!("dry run: nothing was changed");
    }
    failed
}
