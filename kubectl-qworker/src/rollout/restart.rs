//! `rollout restart NAME`: a new `quickube.com/restartedAt` pod annotation changes the pod-spec
//! hash, so the operator rolls every worker over to "the same" spec.

use std::io::Write;

use jiff::Timestamp;
use kube::api::Patch;
use qscaler_crds::names::ANNOTATION_RESTARTED_AT;
use serde_json::{json, Value};

use super::qworkers;
use crate::client::Ctx;
use crate::error::{resource, Action, Context, Result};

/// The merge patch that restarts at `now` (RFC 3339).
pub fn restart_patch(now: &str) -> Value {
    json!({"spec": {"podMetadata": {"annotations": {ANNOTATION_RESTARTED_AT: now}}}})
}

/// The annotation's value: RFC 3339 in UTC to the second, as `kubectl rollout restart` writes it.
pub fn restarted_at(now: Timestamp) -> String {
    format!("{now:.0}")
}

pub async fn run(ctx: &Ctx, name: &str, out: &mut impl Write) -> Result<()> {
    let now = restarted_at(Timestamp::now());
    let action = Action::new("patch", resource::QWORKERS)
        .named(name)
        .in_namespace(Some(&ctx.namespace));
    // A merge patch never creates: a missing QWorker is a 404 naming it (or the CRD missing).
    qworkers(ctx)
        .patch(
            name,
            &super::patch_params(),
            &Patch::Merge(restart_patch(&now)),
        )
        .await
        .ctx(&action)?;
    writeln!(out, "qworker.quickube.com/{name} restarted")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_only_touches_the_restart_annotation() {
        assert_eq!(
            restart_patch("2026-01-01T00:00:00Z"),
            json!({"spec": {"podMetadata": {"annotations": {"quickube.com/restartedAt": "2026-01-01T00:00:00Z"}}}})
        );
    }

    #[test]
    fn the_time_is_utc_to_the_second() {
        let at = |s, ns| restarted_at(Timestamp::new(s, ns).unwrap());
        assert_eq!(at(1_767_225_600, 0), "2026-01-01T00:00:00Z");
        assert_eq!(at(1_767_225_659, 999_999_999), "2026-01-01T00:00:59Z");
    }
}
