//! The QWorker controller: observe (the QWorker, its pods from the shared reflector, the last queue
//! reading) → plan ([`crate::planning::plan`], pure) → apply (this file, thin) → status.
//!
//! Level-triggered and idempotent: any trigger (QWorker change, pod change, poller, requeue) runs the
//! same steps. Writes are recorded as expectations before the next plan, so a lagging cache never
//! makes it create or drain twice. Status is patched only when it changed.

use std::collections::BTreeMap;

use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use qscaler_crds::conditions::{self as cond, reason};
use qscaler_crds::hash::{pod_spec_hash, PodSpecHash};
use qscaler_crds::names::{self, DrainReason};
use qscaler_crds::qworker::ContainerUsage;
use qscaler_crds::validation::{summary, validate_qworker};
use qscaler_crds::{QWorker, QWorkerStatus, ScalerConfig};

use crate::broker::Depth;
use crate::conditions;
use crate::context::{lock, Context};
use crate::expectations::Expect;
use crate::observe::{self, counts, fold_usage, observe_pod, oom_killed, owned_by};
use crate::planning::{self, DeleteReason, ObservedPod, Pacing, Phase, Plan, PlanInput};
use crate::pods::build_pod;
use crate::revisions;
use crate::scaling::{hold, raw_desired, Stabilizer};
use crate::sizing::{self, quantities, Requests};
use crate::Error;

pub async fn reconcile(qw: Arc<QWorker>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&qw, &ctx).await;
    ctx.metrics.inc(
        "qscaler_reconciles_total",
        &[("controller", "qworker")],
        1.0,
    );
    ctx.metrics.observe(
        "qscaler_reconcile_duration_seconds",
        &[("controller", "qworker")],
        started.elapsed(),
    );
    result
}

pub fn error_policy(qw: Arc<QWorker>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(qworker = %qw.name_any(), namespace = qw.namespace().unwrap_or_default(), error = %err, "reconcile failed");
    ctx.metrics.inc(
        "qscaler_reconcile_errors_total",
        &[("controller", "qworker"), ("kind", err.kind())],
        1.0,
    );
    Action::requeue(Duration::from_secs(2))
}

fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

async fn publish(
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

async fn write_status(
    ctx: &Context,
    qw: &QWorker,
    old: &QWorkerStatus,
    status: &QWorkerStatus,
) -> Result<(), Error> {
    if status == old && qw.status.is_some() {
        return Ok(());
    }
    let api: Api<QWorker> =
        Api::namespaced(ctx.client.clone(), &qw.namespace().unwrap_or_default());
    api.patch_status(
        &qw.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// What the scaler side says for this QWorker: a depth, and the ScalerHealthy condition to set
/// (`None`: no reading yet, leave the condition as it is).
fn scaler_view(
    ctx: &Context,
    qw: &QWorker,
    sc: Option<&ScalerConfig>,
) -> (Option<Depth>, Option<(bool, &'static str, String)>) {
    let ns = qw.namespace().unwrap_or_default();
    let sc_name = &qw.spec.scale_config.scaler_config_ref;
    let Some(sc) = sc else {
        return (
            None,
            Some((
                false,
                reason::SCALER_CONFIG_NOT_FOUND,
                format!("ScalerConfig {ns}/{sc_name} not found"),
            )),
        );
    };
    let key = (ns, qw.name_any());
    let reading = lock(&ctx.readings)
        .get(&key)
        .filter(|r| r.at.elapsed() <= ctx.settings.reading_max_age)
        .cloned();
    match reading.map(|r| r.result) {
        Some(Ok(d)) => (
            Some(d),
            Some((
                true,
                reason::QUEUE_READ,
                format!("reading queue {}", qw.spec.scale_config.queue),
            )),
        ),
        Some(Err(e)) => (None, Some((false, reason::BROKER_UNREACHABLE, e))),
        None => match sc
            .status
            .as_ref()
            .filter(|s| !s.healthy && !s.message.is_empty())
        {
            Some(s) => (
                None,
                Some((
                    false,
                    reason::BROKER_UNREACHABLE,
                    format!("ScalerConfig {sc_name}: {}", s.message),
                )),
            ),
            None => (None, None),
        },
    }
}

/// The outcome of applying a plan.
#[derive(Default)]
struct Applied {
    created: Vec<String>,
    errors: Vec<Error>,
}

async fn apply_plan(
    ctx: &Context,
    qw: &QWorker,
    hash: &PodSpecHash,
    sc: Option<&ScalerConfig>,
    sizes: &BTreeMap<String, Requests>,
    plan: &Plan,
) -> Applied {
    let ns = qw.namespace().unwrap_or_default();
    let key = (ns.clone(), qw.name_any());
    let labels = [("namespace", ns.as_str()), ("qworker", key.1.as_str())];
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut out = Applied::default();
    let record = |pod: &str, e: Expect| {
        let mut mem = lock(&ctx.memory);
        mem.entry(key.clone())
            .or_default()
            .expectations
            .record(pod, e, Instant::now());
    };
    let gone = |e: &kube::Error| matches!(e, kube::Error::Api(a) if a.code == 404);

    for (pod, why) in &plan.delete {
        match api.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => {
                out.errors.push(e.into());
                continue;
            }
        }
        record(pod, Expect::Deleted);
        let why = match why {
            DeleteReason::Succeeded => "succeeded",
            DeleteReason::Failed => "failed",
            DeleteReason::NotStarted => "not-started",
            DeleteReason::Outdated => "outdated",
        };
        tracing::debug!(pod, reason = why, "deleted pod");
        ctx.metrics.inc(
            "qscaler_pods_deleted_total",
            &[labels[0], labels[1], ("reason", why)],
            1.0,
        );
    }
    for pod in &plan.undrain {
        let patch =
            serde_json::json!({"metadata": {"annotations": {names::ANNOTATION_DRAIN: null}}});
        match api
            .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                record(pod, Expect::Undrained);
                ctx.metrics
                    .inc("qscaler_pods_undrained_total", &labels, 1.0);
            }
            Err(e) if gone(&e) => {}
            Err(e) => out.errors.push(e.into()),
        }
    }
    for (pod, why) in &plan.drain {
        let patch = serde_json::json!({"metadata": {"annotations": {names::ANNOTATION_DRAIN: why.as_str()}}});
        match api
            .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                record(pod, Expect::Drained(*why));
                ctx.metrics.inc(
                    "qscaler_pods_drained_total",
                    &[labels[0], labels[1], ("reason", why.as_str())],
                    1.0,
                );
            }
            Err(e) if gone(&e) => {}
            Err(e) => out.errors.push(e.into()),
        }
    }
    if plan.create > 0 {
        let built = build_pod(qw, hash, sc, sizes);
        for w in &built.warnings {
            tracing::warn!(qworker = %key.1, namespace = %ns, "{w}");
        }
        // Up to 8 creations in flight: a scale-up of dozens of pods takes a few round trips, not dozens.
        let pp = PostParams::default();
        let results: Vec<kube::Result<Pod>> = futures::stream::iter(0..plan.create)
            .map(|_| api.create(&pp, &built.pod))
            .buffer_unordered(8)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(p) => {
                    let name = p.name_any();
                    record(&name, Expect::Created);
                    out.created.push(name);
                    ctx.metrics.inc("qscaler_pods_created_total", &labels, 1.0);
                }
                Err(e) => out.errors.push(e.into()),
            }
        }
        if let Some(e) = out.errors.last() {
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
    }
    out
}

/// Everything decided under the memory lock.
struct Decision {
    desired: i32,
    plan: Plan,
    view: Vec<ObservedPod>,
    crashing: bool,
    crash_event: bool,
    new_failures: u32,
    streak: u32,
    backoff_wait: Duration,
    next_change: Option<Duration>,
    expectations_pending: bool,
}

async fn reconcile_inner(qw: &QWorker, ctx: &Arc<Context>) -> Result<Action, Error> {
    let ns = qw.namespace().unwrap_or_default();
    let name = qw.name_any();
    let key = (ns.clone(), name.clone());
    if qw.metadata.deletion_timestamp.is_some() {
        lock(&ctx.memory).remove(&key);
        ctx.metrics
            .forget(&[("namespace", &ns), ("qworker", &name)]);
        return Ok(Action::await_change());
    }
    // Never plan from a cache that has not listed the pods yet (it would look like zero pods).
    ctx.caches_synced().await;
    let now_t = now_time();
    let generation = qw.metadata.generation;
    let old = qw.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = generation;

    // Validate: an invalid spec is reported and the workers are left exactly as they are.
    let problems = validate_qworker(&qw.spec);
    if !problems.is_empty() {
        let msg = summary(&problems);
        let already = old
            .conditions
            .iter()
            .any(|c| c.type_ == cond::SPEC_VALID && c.status == "False" && c.message == msg);
        conditions::set(
            &mut status.conditions,
            cond::SPEC_VALID,
            false,
            reason::INVALID_SPEC,
            msg.clone(),
            generation,
            &now_t,
        );
        conditions::set(
            &mut status.conditions,
            cond::READY,
            false,
            reason::INVALID_SPEC,
            "the spec is invalid; workers are left as they are",
            generation,
            &now_t,
        );
        write_status(ctx, qw, &old, &status).await?;
        if !already {
            tracing::warn!(qworker = %name, namespace = %ns, problems = %msg, "invalid QWorker");
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
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    conditions::set(
        &mut status.conditions,
        cond::SPEC_VALID,
        true,
        reason::VALID,
        "the spec is valid",
        generation,
        &now_t,
    );

    // The template's identity and its revision history.
    let hash = pod_spec_hash(&qw.spec);
    let synced = lock(&ctx.memory)
        .get(&key)
        .and_then(|m| m.revision_synced.clone());
    if synced.as_deref() != Some(hash.full()) {
        match revisions::sync(&ctx.client, qw, &hash).await {
            Ok(created) => {
                lock(&ctx.memory)
                    .entry(key.clone())
                    .or_default()
                    .revision_synced = Some(hash.full().to_string());
                if let Some(rev) = created.filter(|_| {
                    !old.current_pod_spec_hash.is_empty()
                        && old.current_pod_spec_hash != hash.full()
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
                tracing::warn!(qworker = %name, error = %e, "could not record the revision history");
                ctx.metrics.inc(
                    "qscaler_reconcile_errors_total",
                    &[("controller", "qworker"), ("kind", "revision")],
                    1.0,
                );
            }
        }
    }
    status.current_pod_spec_hash = hash.full().to_string();

    // Observe.
    let sc = ctx
        .scalers
        .get(&ObjectRef::new(&qw.spec.scale_config.scaler_config_ref).within(&ns));
    let (depth, scaler_condition) = scaler_view(ctx, qw, sc.as_deref());
    let cached: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| owned_by(p, qw))
        .collect();
    let observed: Vec<ObservedPod> = cached
        .iter()
        .map(|p| observe_pod(p, hash.short()))
        .collect();
    let now_chrono = chrono::Utc::now();
    let healthy_secs = ctx.settings.backoff.healthy_after.as_secs() as i64;
    let healthy = cached.iter().any(|p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
            || observe::running_for(p, now_chrono, healthy_secs)
    });
    let failed: Vec<&str> = observed
        .iter()
        .filter(|p| p.phase == Phase::Failed)
        .map(|p| p.name.as_str())
        .collect();

    // Decide.
    let sc_cfg = &qw.spec.scale_config;
    let window = sc_cfg
        .scale_down_stabilization_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(ctx.settings.stabilization);
    let d = {
        let now = Instant::now();
        let mut mem = lock(&ctx.memory);
        let m = mem.entry(key.clone()).or_default();
        let had_status = qw
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .is_some();
        let stabilizer = m.stabilizer.get_or_insert_with(|| {
            Stabilizer::seeded(now, had_status.then_some(old.desired_replicas))
        });
        let alive = observed
            .iter()
            .filter(|p| p.phase.is_alive() && p.draining.is_none())
            .count() as i32;
        let desired = match depth {
            Some(dp) => {
                let raw = raw_desired(
                    dp.backlog(),
                    sc_cfg.scaling_factor,
                    sc_cfg.min_replicas,
                    sc_cfg.max_replicas,
                );
                stabilizer
                    .recommend(now, raw, window)
                    .clamp(sc_cfg.min_replicas.max(0), sc_cfg.max_replicas.max(0))
            }
            None => hold(
                stabilizer
                    .current(now, window)
                    .or(had_status.then_some(old.desired_replicas)),
                alive,
                sc_cfg.min_replicas,
                sc_cfg.max_replicas,
            ),
        };
        let new_failures =
            m.crash
                .observe(failed.iter().copied(), healthy, now, &ctx.settings.backoff);
        let backoff_wait = m.crash.wait(now, &ctx.settings.backoff);
        let now_ms = now_t.0.as_millisecond();
        let view = m
            .expectations
            .overlay(&observed, now, ctx.settings.expectation_timeout, now_ms);
        let plan = planning::plan(&PlanInput {
            pods: &view,
            desired,
            max_replicas: sc_cfg.max_replicas,
            pacing: Pacing::resolve(&qw.rollout_strategy(), desired),
            may_create: backoff_wait.is_zero(),
        });
        let crashing = m.crash.crashing();
        let crash_event = crashing && !m.crash_reported;
        m.crash_reported = crashing;
        Decision {
            desired,
            next_change: stabilizer.next_change(now, window),
            plan,
            view,
            crashing,
            crash_event,
            new_failures,
            streak: m.crash.streak(),
            backoff_wait,
            expectations_pending: !m.expectations.is_empty(),
        }
    };

    // Vertical sizing: peaks are folded whether or not activateVPA is set; requests only with it.
    let peaks = fold_usage(
        &old.max_container_resources_usage,
        cached.iter().map(|p| p.as_ref()),
    );
    let oom = {
        let mut mem = lock(&ctx.memory);
        let m = mem.entry(key.clone()).or_default();
        m.oom_killed
            .extend(oom_killed(cached.iter().map(|p| p.as_ref())));
        m.oom_killed.clone()
    };
    let sizes: BTreeMap<String, Requests> = if sc_cfg.activate_vpa {
        let policy = qw.spec.vpa.clone().unwrap_or_default();
        qw.spec
            .pod_spec
            .containers
            .iter()
            .map(|c| {
                let peak = peaks.iter().find(|u| u.name == c.name);
                (
                    c.name.clone(),
                    sizing::recommend(c, peak, oom.contains(&c.name), &policy),
                )
            })
            .filter(|(_, r)| r.cpu_millis.is_some() || r.memory_bytes.is_some())
            .collect()
    } else {
        BTreeMap::new()
    };

    // Apply.
    let applied = apply_plan(ctx, qw, &hash, sc.as_deref(), &sizes, &d.plan).await;
    let plan_done = Plan {
        create: applied.created.len() as i32,
        ..d.plan.clone()
    };
    if !d.plan.is_empty() {
        tracing::info!(
            qworker = %name, namespace = %ns, desired = d.desired,
            create = applied.created.len(), delete = d.plan.delete.len(),
            drain = d.plan.drain.len(), undrain = d.plan.undrain.len(), "applied plan"
        );
    }

    // Events.
    if d.desired != old.desired_replicas || qw.status.is_none() {
        let backlog = depth
            .map(|x| format!(" (backlog {})", x.backlog()))
            .unwrap_or_default();
        let (r, verb) = if d.desired >= old.desired_replicas {
            ("ScaledUp", "up")
        } else {
            ("ScaledDown", "down")
        };
        if qw.status.is_some() {
            publish(
                ctx,
                qw,
                EventType::Normal,
                r,
                "Scale",
                format!(
                    "scaled {verb} from {} to {} workers{backlog}",
                    old.desired_replicas, d.desired
                ),
            )
            .await;
        }
    }
    for why in [DrainReason::ScaleDown, DrainReason::Rollout] {
        let pods: Vec<&str> = d
            .plan
            .drain
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
    if !d.plan.undrain.is_empty() {
        publish(
            ctx,
            qw,
            EventType::Normal,
            "Undrained",
            "Undrain",
            format!("demand rose again; kept {}", d.plan.undrain.join(", ")),
        )
        .await;
    }
    if d.new_failures > 0 {
        tracing::warn!(qworker = %name, namespace = %ns, failures = d.streak, "worker pods failed");
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

    // Status.
    let after = planning::apply(&d.view, &plan_done, now_t.0.as_millisecond(), "created-");
    let c = counts(&after);
    let recommended = sizes
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
    status = crate::status::compute(
        &status,
        &crate::status::Observed {
            generation,
            now: &now_t,
            short_hash: hash.short(),
            full_hash: hash.full(),
            counts: c,
            desired: d.desired,
            depth,
            scaler: scaler_condition,
            crash_streak: d.crashing.then_some(d.streak),
            acted: !plan_done.is_empty(),
            peaks,
            recommended,
        },
    );
    write_status(ctx, qw, &old, &status).await?;

    let m = &ctx.metrics;
    let l = [("namespace", ns.as_str()), ("qworker", name.as_str())];
    m.set("qscaler_desired_replicas", &l, d.desired as f64);
    m.set("qscaler_current_replicas", &l, c.alive as f64);
    m.set("qscaler_draining_replicas", &l, c.draining as f64);
    if let Some(dp) = depth {
        m.set("qscaler_queue_depth", &l, dp.queued as f64);
        m.set("qscaler_queue_in_flight", &l, dp.in_flight as f64);
    }

    if let Some(e) = applied.errors.into_iter().next() {
        return Err(e);
    }
    // Requeue: soon while writes are unconfirmed, at backoff expiry, or when stabilization allows a
    // scale-down; otherwise watches and the poller bring the next change.
    let mut next = Duration::from_secs(60);
    if d.expectations_pending || !d.plan.is_empty() {
        next = next.min(Duration::from_secs(2));
    }
    if !d.backoff_wait.is_zero() {
        next = next.min(d.backoff_wait + Duration::from_millis(50));
    }
    if let Some(n) = d.next_change {
        next = next.min(n + Duration::from_millis(50));
    }
    if depth.is_none() {
        next = next.min(Duration::from_secs(2));
    }
    Ok(Action::requeue(next))
}
