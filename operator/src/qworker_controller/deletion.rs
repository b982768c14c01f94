//! Carrying out a QWorker's deletion (the finalizer's cleanup; the rules are
//! [`crate::deletion::plan_deletion`]): drain, delete what must go, return the lists of ended pods,
//! and finally the lists of pods that vanished (the broker's own list of holders, each checked
//! with a GET). `Ok(None)`: done, the finalizer may go; `Ok(Some(d))`: look again in `d`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use qscaler_crds::names::{self, DrainReason};
use qscaler_crds::worker_pod::WorkerPod;
use qscaler_crds::QWorker;

use super::events::publish;
use crate::context::Context;
use crate::deletion::{plan_deletion, PodFacts, DEFAULT_GRACE_SECONDS};
use crate::object_key::ObjectKey;
use crate::observe::observe_pod;
use crate::poller::{self, PodInfo};
use crate::Error;

const AGAIN: Duration = Duration::from_secs(2);

pub(super) async fn clean_up(ctx: &Context, qw: &QWorker) -> Result<Option<Duration>, Error> {
    let ns = qw.namespace().unwrap_or_default();
    let name = qw.name_any();
    let key = ObjectKey::new(&ns, &name);
    let orphaning = qw.finalizers().iter().any(|f| f == "orphan");
    if orphaning {
        tracing::info!(qworker = %name, namespace = %ns, "orphaning delete: the workers run on without owner and keep their tasks");
        return Ok(None);
    }
    ctx.caches_synced().await;
    let pods: Vec<(Arc<Pod>, WorkerPod)> = ctx
        .pods
        .of(&ns, &name)
        .into_iter()
        .filter_map(|p| {
            let w = WorkerPod::from_pod(&p, qw)?;
            Some((p, w))
        })
        .collect();
    let facts: Vec<PodFacts> = pods
        .iter()
        .map(|(_, w)| PodFacts {
            pod: observe_pod(w, ""),
            grace_seconds: w.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS),
        })
        .collect();
    let elapsed = qw
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| (k8s_openapi::jiff::Timestamp::now() - t.0).get_seconds())
        .unwrap_or(0);
    let plan = plan_deletion(&facts, elapsed, false);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let gone = |e: &kube::Error| matches!(e, kube::Error::Api(a) if a.code == 404);
    let mut errors = vec![];

    for pod in &plan.drain {
        let patch = serde_json::json!({"metadata": {"annotations": {names::ANNOTATION_DRAIN: DrainReason::Deleted.as_str()}}});
        match api
            .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => errors.push(e),
        }
    }
    if !plan.drain.is_empty() {
        publish(
            ctx,
            qw,
            EventType::Normal,
            "Draining",
            "Delete",
            format!(
                "QWorker deleted: draining {} worker(s), their in-flight tasks go back to the queue: {}",
                plan.drain.len(),
                plan.drain.join(", ")
            ),
        )
        .await;
    }
    for pod in &plan.delete {
        match api.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(qworker = %name, namespace = %ns, pod, "QWorker deleted: pod not started or past its grace, deleted")
            }
            Err(e) if gone(&e) => {}
            Err(e) => errors.push(e),
        }
    }
    let sc = &qw.spec.scale_config.scaler_config_ref;
    let queue = &qw.spec.scale_config.queue;
    let mut pending_returns = false;
    for pod in &plan.give_back {
        let Some((p, _)) = pods.iter().find(|(_, w)| w.name == *pod) else {
            continue;
        };
        let current = ctx.pollers.params(&ObjectKey::new(&ns, sc));
        match poller::return_now(
            &ctx.returner(),
            &key,
            current.as_ref(),
            queue,
            pod,
            &PodInfo::of(p),
        )
        .await
        {
            Ok(_) => match api.delete(pod, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if gone(&e) => {}
                Err(e) => errors.push(e),
            },
            Err(e) => {
                tracing::warn!(qworker = %name, namespace = %ns, pod, error = %e, "could not return an ended worker's tasks; the deletion waits");
                pending_returns = true;
            }
        }
    }
    if let Some(e) = errors.into_iter().next() {
        return Err(e.into());
    }
    if !plan.waiting.is_empty() || pending_returns || !plan.give_back.is_empty() {
        return Ok(Some(AGAIN));
    }
    // Every worker has ended: the lists of pods that vanished (deleted by someone else, or by a
    // foreground cascade) are found in the broker itself.
    match sweep(ctx, qw, &key).await {
        Ok(()) => Ok(None),
        Err(e) => {
            tracing::warn!(qworker = %name, namespace = %ns, error = %e, "could not return the in-flight tasks of vanished workers; the deletion waits");
            Ok(Some(AGAIN))
        }
    }
}

/// Returns every list of `queue` held by a pod of this QWorker that no longer runs.
async fn sweep(ctx: &Context, qw: &QWorker, key: &ObjectKey) -> Result<(), String> {
    let sc = &qw.spec.scale_config.scaler_config_ref;
    let queue = &qw.spec.scale_config.queue;
    let template = PodInfo::of_template(qw);
    let ret = ctx.returner();
    let current = ctx.pollers.params(&ObjectKey::new(&key.namespace, sc));
    let Some(params) =
        poller::params_of_pod(&ret, &key.namespace, current.as_ref(), &template).await
    else {
        tracing::info!(qworker = %key.name, namespace = %key.namespace, "no broker known (no ScalerConfig): no in-flight list to look for");
        return Ok(());
    };
    let prefix = format!("{}-", key.name);
    let owners: BTreeSet<String> = poller::list_owners(&ret, params, queue, &key.namespace)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|p| p.starts_with(&prefix))
        .collect();
    for pod in owners {
        if poller::look_up(&ret.client, &key.namespace, &pod)
            .await
            .map_err(|e| e.to_string())?
            .may_return()
        {
            poller::return_now(&ret, key, current.as_ref(), queue, &pod, &template)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
