//! Events a reconcile publishes: what it changed (scaled, drained, undrained) and what went wrong,
//! from what was actually done ([`Applied`]), never from the plan: a drain whose PATCH failed is
//! not announced.

use kube::runtime::events::{Event, EventType};
use kube::Resource;
use qscaler_crds::conditions::{self as cond, reason};
use qscaler_crds::names::DrainReason;
use qscaler_crds::{QWorker, QWorkerStatus};

use super::apply::Applied;
use super::decide::Decision;
use crate::broker::Depth;
use crate::context::Context;
use crate::controls::Held;

/// Whether the last status already shows `h` holding (its Event was published then).
fn already_held(old: &QWorkerStatus, h: &Held) -> bool {
    old.conditions
        .iter()
        .any(|c| c.type_ == cond::SCALE_LIMITED && c.status == "True" && c.reason == h.reason())
}

pub(super) async fn publish(
    ctx: &Context,
    qw: &QWorker,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &qw.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish an Event");
    }
}

/// The Events of one reconcile: its decision and what applying it did.
pub(super) async fn announce(
    ctx: &Context,
    qw: &QWorker,
    old: &QWorkerStatus,
    d: &Decision,
    applied: &Applied,
    depth: Option<Depth>,
) {
    if let Some(e) = &applied.failed_create {
        publish(
            ctx,
            qw,
            EventType::Warning,
            "FailedCreate",
            "Create",
            format!("creating a worker pod failed: {e}"),
        )
        .await;
    }
    if d.desired != old.desired_replicas {
        let backlog = depth
            .map(|x| format!(" (backlog {})", x.backlog()))
            .unwrap_or_default();
        let (r, verb) = if d.desired > old.desired_replicas {
            ("ScaledUp", "up")
        } else {
            ("ScaledDown", "down")
        };
        // The recorder folds a repeat of (reason, action) into the first Event's series and keeps
        // that first note: the target in the action keeps "to 2" from showing as "to 3".
        publish(
            ctx,
            qw,
            EventType::Normal,
            r,
            &format!("ScaleTo{}", d.desired),
            format!(
                "scaled {verb} from {} to {} workers{backlog}",
                old.desired_replicas, d.desired
            ),
        )
        .await;
    }
    if let Some(h) = d.held.as_ref().filter(|h| !already_held(old, h)) {
        // Why nothing (or less) moves: once per control taking hold.
        publish(ctx, qw, EventType::Normal, h.reason(), "Hold", h.message()).await;
    }
    for why in [DrainReason::ScaleDown, DrainReason::Rollout] {
        let pods: Vec<&str> = applied
            .drained
            .iter()
            .filter(|(_, r)| *r == why)
            .map(|(n, _)| n.as_str())
            .collect();
        if !pods.is_empty() {
            publish(
                ctx,
                qw,
                EventType::Normal,
                "Draining",
                "Drain",
                format!(
                    "draining {} worker(s) ({}): {}",
                    pods.len(),
                    why.as_str(),
                    pods.join(", ")
                ),
            )
            .await;
        }
    }
    if !applied.undrained.is_empty() {
        publish(
            ctx,
            qw,
            EventType::Normal,
            "Undrained",
            "Undrain",
            format!("demand rose again; kept {}", applied.undrained.join(", ")),
        )
        .await;
    }
    if d.new_failures > 0 {
        tracing::warn!(qworker = %qw.metadata.name.as_deref().unwrap_or_default(), namespace = %qw.metadata.namespace.as_deref().unwrap_or_default(), failures = d.streak, "worker pods failed");
    }
    if d.crash_event {
        publish(
            ctx,
            qw,
            EventType::Warning,
            reason::CRASH_LOOP,
            "Backoff",
            format!(
                "{} workers failed in a row; replacements back off (next in {}s)",
                d.streak,
                d.backoff_wait.as_secs()
            ),
        )
        .await;
    }
}
