//! The QWorker controller: observe (the QWorker, its pods from the pod index, the last queue
//! reading) → decide ([`crate::planning::plan`] and the scaling rules, pure) → apply (thin) →
//! events and status.
//!
//! Level-triggered and idempotent: any trigger (QWorker change, pod change, poller, requeue) runs the
//! same steps. Writes are recorded as expectations before the next plan, so a lagging cache never
//! makes it create or drain twice. Status is patched only when it changed.

mod apply;
mod decide;
mod deletion;
mod events;
mod inputs;
mod spec_check;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use qscaler_crds::conditions::{self as cond, reason};
use qscaler_crds::hash::{pod_spec_hash, PodSpecHash};
use qscaler_crds::names;
use qscaler_crds::qworker::ContainerUsage;
use qscaler_crds::validation::{summary, validate_qworker, Problem};
use qscaler_crds::worker_pod::{is_worker_of, Phase, WorkerPod};
use qscaler_crds::{QWorker, QWorkerStatus, ScalerConfig};

use crate::broker::Depth;
use crate::conditions;
use crate::context::Context;
use crate::memory::SpecCheck;
use crate::object_key::ObjectKey;
use crate::observe::{counts, observe_pod};
use crate::planning::{self, ObservedPod};
use crate::revisions;
use crate::sizing::quantities;
use crate::status::ScalerHealth;
use crate::status_write::{status_write, StatusWrite, Written};
use crate::Error;
use decide::{decide, requeue_after, Decision, Seen};
use events::publish;

pub async fn reconcile(qw: Arc<QWorker>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .reconcile("qworker", with_finalizer(qw, &ctx))
        .await
}

/// The finalizer ([`names::FINALIZER`], kube-runtime's helper adds and removes it): a QWorker
/// being deleted is cleaned up (see [`deletion`]) until nothing of it runs and its in-flight
/// tasks are back in the queue; only then does the helper remove the finalizer.
async fn with_finalizer(qw: Arc<QWorker>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let ns = qw.namespace().unwrap_or_default();
    let name = qw.name_any();
    let api: Api<QWorker> = Api::namespaced(ctx.client.clone(), &ns);
    let ours = qw.finalizers().iter().any(|f| f == names::FINALIZER);
    if qw.metadata.deletion_timestamp.is_some() {
        if !ours {
            forget(ctx, &ns, &name);
            return Ok(Action::await_change());
        }
        if let Some(again) = deletion::clean_up(ctx, &qw).await? {
            return Ok(Action::requeue(again));
        }
    }
    let action = finalizer(&api, names::FINALIZER, qw.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(qw) => reconcile_inner(&qw, ctx).await,
            FinalizerEvent::Cleanup(_) => Ok(Action::await_change()),
        }
    })
    .await
    .map_err(|e| match e {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        FinalizerError::AddFinalizer(e) | FinalizerError::RemoveFinalizer(e) => e.into(),
        other => Error::Internal(other.to_string()),
    })?;
    if qw.metadata.deletion_timestamp.is_some() {
        tracing::info!(qworker = %name, namespace = %ns, "QWorker deleted: its workers have ended and their in-flight tasks are back in the queue");
        forget(ctx, &ns, &name);
        // Its ScalerConfig may be waiting for its last QWorker to go.
        ctx.triggers.scaler(&ObjectKey::new(
            &ns,
            &qw.spec.scale_config.scaler_config_ref,
        ));
    }
    Ok(action)
}

/// Forgets what the operator remembers of a QWorker that is going.
fn forget(ctx: &Context, ns: &str, name: &str) {
    ctx.memory.forget(&ObjectKey::new(ns, name));
    ctx.metrics.forget(&[("namespace", ns), ("qworker", name)]);
}

pub fn error_policy(qw: Arc<QWorker>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(qworker = %qw.name_any(), namespace = qw.namespace().unwrap_or_default(), error = %err, "reconcile failed");
    ctx.metrics.reconcile_failed("qworker", err.kind());
    Action::requeue(Duration::from_secs(2))
}

fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Writes `status` when it is worth it (see [`crate::status_write`]); returns how soon to come
/// back when a depth-only change was held back.
async fn write_status(
    ctx: &Context,
    qw: &QWorker,
    status: &QWorkerStatus,
) -> Result<Option<Duration>, Error> {
    let key = ObjectKey::of(qw);
    let now = Instant::now();
    let verdict = ctx.memory.with(&key, |m| {
        status_write(qw.status.as_ref(), m.status_written.as_ref(), status, now)
    });
    let counted = |result: &str| {
        let labels = [("namespace", key.namespace.as_str()), ("result", result)];
        ctx.metrics.inc("qscaler_status_writes_total", &labels, 1.0)
    };
    match verdict {
        StatusWrite::Skip => return Ok(None),
        StatusWrite::Defer(wait) => {
            counted("deferred");
            return Ok(Some(wait));
        }
        StatusWrite::Write => {}
    }
    let api: Api<QWorker> = Api::namespaced(ctx.client.clone(), &key.namespace);
    api.patch_status(
        &key.name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    counted("written");
    ctx.memory.with(&key, |m| {
        m.status_written = Some(Written {
            status: status.clone(),
            at: now,
        })
    });
    Ok(None)
}

async fn reconcile_inner(qw: &QWorker, ctx: &Arc<Context>) -> Result<Action, Error> {
    let ns = qw.namespace().unwrap_or_default();
    let name = qw.name_any();
    let key = ObjectKey::new(&ns, &name);
    // Never plan from a cache that has not listed the pods yet (it would look like zero pods).
    ctx.caches_synced().await;
    let now_t = now_time();
    let generation = qw.metadata.generation;
    let old = qw.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = generation;
    status.selector = format!("{}={name}", names::LABEL_QWORKER);

    // Validate: an invalid spec is reported and the workers are left exactly as they are.
    let problems = validate_qworker(&qw.spec);
    if !problems.is_empty() {
        report_invalid(ctx, qw, &old, status, &problems, &now_t).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    // The template's identity and its revision history.
    let hash = pod_spec_hash(&qw.spec);
    let sc = ctx
        .scalers
        .get(&ObjectRef::new(&qw.spec.scale_config.scaler_config_ref).within(&ns));

    // A pod the API server refuses is an invalid spec too: checked once per generation.
    if let Some(refusal) = spec_check::check(ctx, qw, &key, &hash, sc.as_deref()).await {
        let problem = Problem {
            field: "spec.podSpec".into(),
            kind: qscaler_crds::validation::ProblemKind::Invalid,
            message: refusal,
        };
        report_invalid(ctx, qw, &old, status, &[problem], &now_t).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    conditions::set_spec_valid(&mut status.conditions, None, generation, &now_t);
    sync_revision(ctx, qw, &key, &hash, &old).await;
    status.current_pod_spec_hash = hash.full().to_string();

    // Observe.
    let (depth, scaler_condition) = inputs::scaler_view(ctx, qw, sc.as_deref());
    let cached: Vec<Arc<Pod>> = ctx
        .pods
        .of(&ns, &name)
        .into_iter()
        .filter(|p| is_worker_of(p, qw))
        .collect();
    let workers: Vec<WorkerPod> = cached.iter().map(|p| WorkerPod::read(p)).collect();
    let observed: Vec<ObservedPod> = workers
        .iter()
        .map(|w| observe_pod(w, hash.short()))
        .collect();
    let healthy_secs = ctx.settings.backoff.healthy_after.as_secs() as i64;
    let healthy: Vec<String> = workers
        .iter()
        .filter(|w| w.phase == Phase::Succeeded || w.running_for(now_t.0, healthy_secs))
        .map(|w| w.name.clone())
        .collect();

    // Decide (pure, on this QWorker's memory), and size new pods (peaks are folded whether or not
    // activateVPA is set).
    let had_status = qw
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .is_some();
    let seen = Seen {
        last_desired: had_status.then_some(old.desired_replicas),
        observed: &observed,
        depth,
        healthy: &healthy,
        now: Instant::now(),
        now_ms: now_t.0.as_millisecond(),
    };
    let d = ctx
        .memory
        .with(&key, |m| decide(m, &ctx.settings, qw, &seen));
    let sizing = inputs::sizing(ctx, qw, &key, &old, &cached);

    // Apply, then Events, status and metrics from what was done.
    let acted = act(
        ctx,
        qw,
        &Act {
            hash: &hash,
            sc: sc.as_deref(),
            sizing: &sizing,
            decision: &d,
            old: &old,
            status,
            depth,
            scaler: scaler_condition,
            now: &now_t,
        },
    )
    .await?;
    if let Some(e) = acted.applied.errors.into_iter().next() {
        return Err(e);
    }
    let next = requeue_after(&d, depth.is_some());
    Ok(Action::requeue(
        acted.status_deferred.map_or(next, |w| next.min(w)),
    ))
}

/// What [`act`] carries out and reports.
struct Act<'a> {
    hash: &'a PodSpecHash,
    sc: Option<&'a ScalerConfig>,
    sizing: &'a inputs::Sizing,
    decision: &'a Decision,
    old: &'a QWorkerStatus,
    /// The status so far (generation, selector, SpecValid, hash).
    status: QWorkerStatus,
    depth: Option<Depth>,
    scaler: Option<ScalerHealth>,
    now: &'a Time,
}

/// Applies the decision's plan, records what was done as expectations, publishes the Events and
/// writes the status of what was done (a failed write is neither announced nor counted).
async fn act(ctx: &Context, qw: &QWorker, a: &Act<'_>) -> Result<Acted, Error> {
    let key = ObjectKey::of(qw);
    let d = a.decision;
    let applied = apply::apply_plan(ctx, qw, a.hash, a.sc, &a.sizing.requests, &d.plan).await;
    ctx.memory.with(&key, |m| applied.expect(m, Instant::now()));
    if let Some(refusal) = &applied.refused {
        // Never tried again until the spec changes (see spec_check).
        ctx.memory.with(&key, |m| {
            m.remember_spec_check(SpecCheck {
                generation: qw.metadata.generation,
                refusal: Some(refusal.clone()),
            })
        });
        ctx.triggers.qworker(&key);
    }
    let done = applied.done();
    if !d.plan.is_empty() {
        tracing::info!(
            qworker = %key.name, namespace = %key.namespace, desired = d.desired,
            create = applied.created.len(), delete = applied.deleted.len(),
            drain = applied.drained.len(), undrain = applied.undrained.len(),
            failed = applied.errors.len(), "applied plan"
        );
    }
    // The scale Events compare with the status as the API server has it: our last write when the
    // cache has not shown it yet (announcing against the lagging cache repeated each scale Event
    // until the cache caught up).
    let written = ctx.memory.with(&key, |m| {
        m.status_written.as_ref().map(|w| w.status.clone())
    });
    let old = written.as_ref().unwrap_or(a.old);
    events::announce(ctx, qw, old, d, &applied, a.depth).await;

    let after = planning::apply(&d.view, &done, a.now.0.as_millisecond(), "created-");
    let c = counts(&after);
    let recommended = a
        .sizing
        .requests
        .iter()
        .map(|(name, r)| {
            let q = quantities(r);
            ContainerUsage {
                name: name.clone(),
                cpu: q.get("cpu").cloned(),
                memory: q.get("memory").cloned(),
            }
        })
        .collect();
    let mut status = crate::status::compute(
        &a.status,
        &crate::status::Observed {
            generation: qw.metadata.generation,
            now: a.now,
            short_hash: a.hash.short(),
            full_hash: a.hash.full(),
            counts: c,
            desired: d.desired,
            depth: a.depth,
            scaler: a.scaler.clone(),
            crash_streak: d.crashing.then_some(d.streak),
            acted: !done.is_empty(),
            peaks: a.sizing.peaks.clone(),
            recommended,
        },
    );
    crate::controls::report(
        &mut status,
        d.paused,
        d.held.as_ref(),
        qw.metadata.generation,
        a.now,
    );
    let deferred = write_status(ctx, qw, &status).await?;

    let m = &ctx.metrics;
    let l = [
        ("namespace", key.namespace.as_str()),
        ("qworker", key.name.as_str()),
    ];
    m.set("qscaler_desired_replicas", &l, d.desired as f64);
    m.set("qscaler_current_replicas", &l, c.alive as f64);
    m.set("qscaler_draining_replicas", &l, c.draining as f64);
    if let Some(dp) = a.depth {
        m.set("qscaler_queue_depth", &l, dp.queued as f64);
        m.set("qscaler_queue_in_flight", &l, dp.in_flight as f64);
    }
    Ok(Acted {
        applied,
        status_deferred: deferred,
    })
}

/// What [`act`] leaves to the reconcile.
struct Acted {
    applied: apply::Applied,
    /// A depth-only status change held back for this long (see [`crate::status_write`]).
    status_deferred: Option<Duration>,
}

/// An invalid spec: SpecValid and Ready false with every problem, an Event once per new message;
/// the workers are left exactly as they are.
async fn report_invalid(
    ctx: &Context,
    qw: &QWorker,
    old: &QWorkerStatus,
    mut status: QWorkerStatus,
    problems: &[Problem],
    now_t: &Time,
) -> Result<(), Error> {
    let generation = qw.metadata.generation;
    let msg = summary(problems);
    let already = old
        .conditions
        .iter()
        .any(|c| c.type_ == cond::SPEC_VALID && c.status == "False" && c.message == msg);
    conditions::set_spec_valid(&mut status.conditions, Some(&msg), generation, now_t);
    conditions::set(
        &mut status.conditions,
        cond::READY,
        false,
        reason::INVALID_SPEC,
        "the spec is invalid; workers are left as they are",
        generation,
        now_t,
    );
    write_status(ctx, qw, &status).await?;
    if !already {
        tracing::warn!(qworker = %qw.name_any(), namespace = %qw.namespace().unwrap_or_default(), problems = %msg, "invalid QWorker");
        publish(
            ctx,
            qw,
            EventType::Warning,
            reason::INVALID_SPEC,
            "Validate",
            msg,
        )
        .await;
    }
    Ok(())
}

/// Records the template as a ControllerRevision once per hash (and announces a rollout). A failure
/// is logged and counted but does not stop scaling: history is not worth a stalled queue.
async fn sync_revision(
    ctx: &Context,
    qw: &QWorker,
    key: &ObjectKey,
    hash: &PodSpecHash,
    old: &QWorkerStatus,
) {
    if ctx.memory.with(key, |m| m.revision_synced(hash.full())) {
        return;
    }
    match revisions::sync(&ctx.client, qw, hash).await {
        Ok(created) => {
            ctx.memory.with(key, |m| m.set_revision_synced(hash.full()));
            if let Some(rev) = created.filter(|_| {
                !old.current_pod_spec_hash.is_empty() && old.current_pod_spec_hash != hash.full()
            }) {
                publish(
                    ctx,
                    qw,
                    EventType::Normal,
                    reason::ROLLING_OUT,
                    "Rollout",
                    format!(
                        "rolling out revision {rev} (pod-spec hash {})",
                        hash.short()
                    ),
                )
                .await;
            }
        }
        Err(e) => {
            tracing::warn!(qworker = %key.name, error = %e, "could not record the revision history");
            ctx.metrics.inc(
                "qscaler_reconcile_errors_total",
                &[("controller", "qworker"), ("kind", "revision")],
                1.0,
            );
        }
    }
}

#[cfg(test)]
mod tests;
