//! Carrying out a plan: deletes, un-drains, drains, then creates (up to 8 in flight). Returns what
//! was actually done ([`Applied`]): the reconcile records those writes as expectations and derives
//! Events and status from them, never from the plan alone.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use qscaler_crds::hash::PodSpecHash;
use qscaler_crds::names::{self, DrainReason};
use qscaler_crds::{QWorker, ScalerConfig};

use crate::context::Context;
use crate::expectations::Expect;
use crate::memory::Memory;
use crate::planning::{DeleteReason, Plan};
use crate::pods::build_pod;
use crate::rejection::{explain, is_spec_rejection};
use crate::sizing::Requests;
use crate::Error;

/// What applying a plan did.
#[derive(Debug, Default)]
pub(super) struct Applied {
    pub created: Vec<String>,
    /// Deleted, or already gone.
    pub deleted: Vec<(String, DeleteReason)>,
    pub drained: Vec<(String, DrainReason)>,
    pub undrained: Vec<String>,
    /// The API server's refusal of the pod itself on a create (see [`crate::rejection`]).
    pub refused: Option<String>,
    /// The last failed create's error, for the FailedCreate Event.
    pub failed_create: Option<String>,
    pub errors: Vec<Error>,
}

impl Applied {
    /// The plan as carried out (what status counts).
    pub fn done(&self) -> Plan {
        Plan {
            create: self.created.len() as i32,
            delete: self.deleted.clone(),
            drain: self.drained.clone(),
            undrain: self.undrained.clone(),
        }
    }

    /// Records every write as an expectation, so the next plan does not repeat it while the cache
    /// lags.
    pub fn expect(&self, m: &mut Memory, now: Instant) {
        for (pod, _) in &self.deleted {
            m.expect(pod, Expect::Deleted, now);
        }
        for pod in &self.undrained {
            m.expect(pod, Expect::Undrained, now);
        }
        for (pod, why) in &self.drained {
            m.expect(pod, Expect::Drained(*why), now);
        }
        for pod in &self.created {
            m.expect(pod, Expect::Created, now);
        }
    }
}

fn gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(a) if a.code == 404)
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
    let name = qw.name_any();
    let labels = [("namespace", ns.as_str()), ("qworker", name.as_str())];
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut out = Applied::default();

    for (pod, why) in &plan.delete {
        match api.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => {
                out.errors.push(e.into());
                continue;
            }
        }
        out.deleted.push((pod.clone(), *why));
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
                out.undrained.push(pod.clone());
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
                out.drained.push((pod.clone(), *why));
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
            tracing::warn!(qworker = %name, namespace = %ns, "{w}");
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
                    out.created.push(p.name_any());
                    ctx.metrics.inc("qscaler_pods_created_total", &labels, 1.0);
                }
                Err(kube::Error::Api(e)) if is_spec_rejection(e.code) => {
                    // Never tried again until the spec changes (see spec_check).
                    out.refused
                        .get_or_insert_with(|| explain(e.code, &e.message));
                    let e = Error::from(kube::Error::Api(e));
                    out.failed_create = Some(e.to_string());
                    out.errors.push(e);
                }
                Err(e) => {
                    let e = Error::from(e);
                    out.failed_create = Some(e.to_string());
                    out.errors.push(e);
                }
            }
        }
    }
    out
}
