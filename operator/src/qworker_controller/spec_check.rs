//! Refusing a bad pod spec up front: each new generation of a QWorker is checked with a
//! server-side dry-run create of one of its pods (nothing is stored, no pod runs). A refusal of
//! the pod itself (400/422, see [`crate::rejection`]) makes the generation invalid: SpecValid
//! False with a readable message, and no pod is created, nor tried again, until the spec changes.
//! Any other failure of the dry run (quota, RBAC, the API server busy) says nothing about the spec:
//! it is not remembered, and pods are created as usual (a real create's refusal is remembered too).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use qscaler_crds::hash::PodSpecHash;
use qscaler_crds::{QWorker, ScalerConfig};

use crate::context::Context;
use crate::memory::SpecCheck;
use crate::object_key::ObjectKey;
use crate::pods::build_pod;
use crate::rejection::{explain, is_spec_rejection};

/// The API server's refusal of this generation's pod, if any (dry-run once per generation).
pub(super) async fn check(
    ctx: &Context,
    qw: &QWorker,
    key: &ObjectKey,
    hash: &PodSpecHash,
    sc: Option<&ScalerConfig>,
) -> Option<String> {
    let generation = qw.metadata.generation;
    if let Some(checked) = ctx.memory.with(key, |m| m.spec_check(generation).cloned()) {
        return checked.refusal;
    }
    let pod = build_pod(qw, hash, sc, &BTreeMap::new()).pod;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &qw.namespace().unwrap_or_default());
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let refusal = match api.create(&pp, &pod).await {
        Ok(_) => None,
        Err(kube::Error::Api(e)) if is_spec_rejection(e.code) => Some(explain(e.code, &e.message)),
        Err(e) => {
            tracing::debug!(qworker = %key.name, namespace = %key.namespace, error = %e, "dry-run create of a worker pod failed; not a spec problem, not remembered");
            return None;
        }
    };
    ctx.memory.with(key, |m| {
        m.remember_spec_check(SpecCheck {
            generation,
            refusal: refusal.clone(),
        })
    });
    refusal
}
