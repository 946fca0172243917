//! The audit trail of the calls that change something: one structured log
//! line per call (target `mcp::audit`: method, target, caller, outcome),
//! and the caller's name on every event the call causes. Never a token.

use tonic::{Request, Status};

use super::auth::Identity;

/// The name of who made `request` (username, else subject), as the auth
/// layer established it.
pub fn caller<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Identity>()
        .map(|i| i.name().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The caller's name and token, for a registry that takes the token.
pub fn caller_login<T>(request: &Request<T>) -> Option<crate::runtime::registries::Caller> {
    let token = request.extensions().get::<super::auth::BearerToken>()?;
    Some(crate::runtime::registries::Caller {
        name: caller(request),
        token: token.0.clone(),
    })
}

/// One line per mutating call, when it has finished: `summarize` says
/// what an answer means.
pub fn record<T>(
    method: &str,
    target: &str,
    caller: &str,
    done: &Result<T, Status>,
    summarize: impl FnOnce(&T) -> String,
) {
    match done {
        Ok(answer) => tracing::info!(
            target: "mcp::audit",
            method,
            target,
            caller,
            outcome = %summarize(answer),
            "audit"
        ),
        Err(status) => refused(method, target, caller, status),
    }
}

/// The line of a call that failed as a whole.
pub fn refused(method: &str, target: &str, caller: &str, status: &Status) {
    tracing::info!(
        target: "mcp::audit",
        method,
        target,
        caller,
        outcome = %format!("failed: {:?}: {}", status.code(), status.message()),
        "audit"
    );
}

/// "ok", or how many of the components failed.
pub fn summary(results: &[crate::proto::ComponentResult]) -> String {
    let failed = results.iter().filter(|r| !r.ok).count();
    if failed == 0 {
        format!("ok ({} component(s))", results.len())
    } else {
        format!("{failed} of {} component(s) failed", results.len())
    }
}
