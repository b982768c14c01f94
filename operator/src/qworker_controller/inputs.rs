//! What a reconcile reads besides its pods: the queue reading the poller left (and the
//! ScalerHealthy condition it implies), and the requests new pods get from observed peaks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use qscaler_crds::conditions::reason;
use qscaler_crds::qworker::ContainerUsage;
use qscaler_crds::{QWorker, QWorkerStatus, ScalerConfig};

use crate::broker::Depth;
use crate::context::Context;
use crate::object_key::ObjectKey;
use crate::observe::{fold_usage, oom_killed};
use crate::readings::ReadError;
use crate::sizing::{self, Requests};
use crate::status::ScalerHealth;

/// What the scaler side says for this QWorker: a depth, and the ScalerHealthy condition to set
/// (`None`: no reading yet, leave the condition as it is).
pub(super) fn scaler_view(
    ctx: &Context,
    qw: &QWorker,
    sc: Option<&ScalerConfig>,
) -> (Option<Depth>, Option<ScalerHealth>) {
    let key = ObjectKey::of(qw);
    let ns = &key.namespace;
    let sc_name = &qw.spec.scale_config.scaler_config_ref;
    let Some(sc) = sc else {
        return (
            None,
            Some(ScalerHealth::bad(
                reason::SCALER_CONFIG_NOT_FOUND,
                format!("ScalerConfig {ns}/{sc_name} not found"),
            )),
        );
    };
    let reading = ctx.readings.fresh(
        &key,
        ctx.settings.reading_max_age,
        std::time::Instant::now(),
    );
    match reading.map(|r| r.result) {
        Some(Ok(d)) => (
            Some(d),
            Some(ScalerHealth {
                healthy: true,
                reason: reason::QUEUE_READ,
                message: format!(
                    "reading queue {}",
                    qw.spec.scale_config.queue_names().join(", ")
                ),
            }),
        ),
        Some(Err(ReadError::Broker(e))) => {
            (None, Some(ScalerHealth::bad(reason::BROKER_UNREACHABLE, e)))
        }
        // This queue alone: replicas are held as on missing data, the others keep scaling.
        Some(Err(ReadError::Queue(e))) => {
            (None, Some(ScalerHealth::bad(reason::QUEUE_UNREADABLE, e)))
        }
        None => match sc
            .status
            .as_ref()
            .filter(|s| !s.healthy && !s.message.is_empty())
        {
            Some(s) => (
                None,
                Some(ScalerHealth::bad(
                    reason::BROKER_UNREACHABLE,
                    format!("ScalerConfig {sc_name}: {}", s.message),
                )),
            ),
            None => (None, None),
        },
    }
}

/// Observed peaks and what they recommend.
pub(super) struct Sizing {
    /// Per-container peaks folded from the usage reports (kept whether or not activateVPA is set).
    pub peaks: Vec<ContainerUsage>,
    /// Requests of new pods, per container; empty unless activateVPA is set.
    pub requests: BTreeMap<String, Requests>,
}

/// Folds the pods' usage reports into the peaks in status and, with activateVPA, derives the
/// requests of new pods (with the OOM bump for containers seen OOM-killed).
pub(super) fn sizing(
    ctx: &Context,
    qw: &QWorker,
    key: &ObjectKey,
    old: &QWorkerStatus,
    pods: &[Arc<Pod>],
) -> Sizing {
    let peaks = fold_usage(
        &old.max_container_resources_usage,
        pods.iter().map(|p| p.as_ref()),
    );
    let seen = oom_killed(pods.iter().map(|p| p.as_ref()));
    let oom: BTreeSet<String> = ctx.memory.with(key, |m| m.note_oom_killed(seen));
    if !qw.spec.scale_config.activate_vpa {
        return Sizing {
            peaks,
            requests: BTreeMap::new(),
        };
    }
    let policy = qw.spec.vpa.clone().unwrap_or_default();
    let requests = qw
        .spec
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
        .collect();
    Sizing { peaks, requests }
}
