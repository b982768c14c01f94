//! Carrying out a plan: deletes, un-drains, drains, then creates (up to 8 in flight), each write
//! recorded as an expectation so the next plan does not repeat it while the cache lags.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use qscaler_crds::hash::PodSpecHash;
use qscaler_crds::names;
use qscaler_crds::{QWorker, ScalerConfig};

use super::events::publish;
use crate::context::{lock, Context};
use crate::expectations::Expect;
use crate::planning::{DeleteReason, Plan};
use crate::pods::build_pod;
use crate::rejection::{explain, is_spec_rejection};
use crate::sizing::Requests;
use crate::Error;

/// The outcome of applying a plan.
#[derive(Default)]
pub(super) struct Applied {
    pub created: Vec<String>,
    pub errors: Vec<Error>,
}

pub(super) async fn apply_plan(
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
            DeleteReason::Exited => "exited",
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
        let mut refused = false;
        for r in results {
            match r {
                Ok(p) => {
                    let name = p.name_any();
                    record(&name, Expect::Created);
                    out.created.push(name);
                    ctx.metrics.inc("qscaler_pods_created_total", &labels, 1.0);
                }
                Err(kube::Error::Api(e)) if is_spec_rejection(e.code) => {
                    // Never tried again until the spec changes (see spec_check).
                    if !refused {
                        refused = true;
                        super::spec_check::remember(
                            ctx,
                            &key,
                            qw.metadata.generation,
                            Some(explain(e.code, &e.message)),
                        );
                        ctx.trigger_qworker(&key.0, &key.1);
                    }
                    out.errors.push(kube::Error::Api(e).into());
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
