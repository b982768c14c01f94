//! Our own pod through the Kubernetes API: watching it for the drain annotation and its deletion
//! (with the grace the kubelet gives us), and patching our annotations (usage, activity and the node
//! autoscalers' annotations that follow it) with merge patches. Needs get, watch and patch on pods.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, WatchEvent, WatchParams};
use kube::{Api, Client, ResourceExt};
use qscaler_crds::names::{
    ANNOTATION_ACTIVITY, ANNOTATION_DO_NOT_DISRUPT, ANNOTATION_SAFE_TO_EVICT,
};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::activity::Activity;
use crate::backoff::{Backoff, LogThrottle};
use crate::{drain, Error, Result};

/// What the supervisor needs to know of its pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodState {
    /// The drain annotation is present.
    pub draining: bool,
    /// The pod is being deleted (`metadata.deletionTimestamp` is set): the kubelet's grace for it,
    /// `metadata.deletionGracePeriodSeconds` (the pod's own grace when that is missing).
    pub deletion_grace: Option<i64>,
    /// `spec.terminationGracePeriodSeconds`.
    pub termination_grace: Option<i64>,
}

impl PodState {
    pub fn of(pod: &Pod) -> PodState {
        let termination_grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds);
        let deletion_grace = pod.metadata.deletion_timestamp.as_ref().map(|_| {
            pod.metadata
                .deletion_grace_period_seconds
                .or(termination_grace)
                .unwrap_or(crate::ending::DEFAULT_GRACE.as_secs() as i64)
        });
        PodState {
            draining: drain::requested(Some(pod.annotations())),
            deletion_grace,
            termination_grace,
        }
    }
}

/// The merge patch that records `activity` on our pod: `quickube.com/activity`, and for the node
/// autoscalers `cluster-autoscaler.kubernetes.io/safe-to-evict` ("false" while busy, "true" when
/// idle) and `karpenter.sh/do-not-disrupt` ("true" while busy, removed when idle), in one write.
pub fn activity_patch(activity: Activity) -> Value {
    let (safe_to_evict, do_not_disrupt) = match activity {
        Activity::Busy => ("false", Value::from("true")),
        Activity::Idle => ("true", Value::Null),
    };
    serde_json::json!({ "metadata": { "annotations": {
        ANNOTATION_ACTIVITY: activity.as_str(),
        ANNOTATION_SAFE_TO_EVICT: safe_to_evict,
        ANNOTATION_DO_NOT_DISRUPT: do_not_disrupt,
    } } })
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect delays to the API: jittered, 200 ms doubling to 10 s. An API that comes late (a
/// certificate fixed, a network policy applied, an apiserver restarted) is found within 10 s.
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Failures logged in full before the log is throttled to one line per [`LOG_EVERY`].
const LOG_FIRST: u32 = 5;
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Logs a failure of the pod watch (throttled); true, for `failed`.
fn watch_failed(doing: &str, e: &kube::Error, throttle: &mut LogThrottle) -> bool {
    if let Some(n) = throttle.failure(Instant::now()) {
        warn!("{doing} our pod: {e} (retrying){}", unlogged(n));
    }
    true
}

fn unlogged(n: u32) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar failures not logged)")
    }
}

/// Our pod.
#[derive(Clone)]
pub struct PodApi {
    api: Api<Pod>,
    name: String,
}

impl PodApi {
    /// Connects (kubeconfig or in-cluster config) and reads the pod once, so that an unreachable or
    /// forbidden API is found out at start.
    pub async fn connect(namespace: &str, name: &str) -> Result<(PodApi, PodState)> {
        let client = Client::try_default().await.map_err(|source| Error::Kube {
            doing: "loading the Kubernetes client config",
            source,
        })?;
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let pod = tokio::time::timeout(CONNECT_TIMEOUT, api.get(name))
            .await
            .map_err(|_| Error::Config(format!("reading pod {namespace}/{name} timed out")))?
            .map_err(|source| Error::Kube {
                doing: "reading our own pod",
                source,
            })?;
        Ok((
            PodApi {
                api,
                name: name.to_owned(),
            },
            PodState::of(&pod),
        ))
    }

    /// [`PodApi::connect`] until it succeeds, however long that takes: a supervisor that gave up
    /// would ignore a later drain for its whole life. Each failure is logged at warn with the next
    /// delay (throttled after the first few).
    pub async fn connect_until_up(namespace: &str, name: &str) -> (PodApi, PodState) {
        let mut backoff = Backoff::new(RETRY_BASE, RETRY_MAX);
        let mut throttle = LogThrottle::new(LOG_FIRST, LOG_EVERY);
        loop {
            match PodApi::connect(namespace, name).await {
                Ok(connected) => {
                    let failed = throttle.failures();
                    let after = if failed == 0 {
                        String::new()
                    } else {
                        format!(" (connected after {failed} failed attempts)")
                    };
                    info!("watching pod {namespace}/{name} for the drain annotation{after}");
                    return connected;
                }
                Err(e) => {
                    let next = backoff.next_delay();
                    if let Some(n) = throttle.failure(Instant::now()) {
                        warn!(
                            "Kubernetes API not usable yet ({e}); retrying in {next:?}{}",
                            unlogged(n)
                        );
                    }
                    tokio::time::sleep(next).await;
                }
            }
        }
    }

    /// Watches the pod and publishes whether it is asked to drain (`tx`) and what else we need of it
    /// (`state`: its deletion and grace periods).
    ///
    /// A plain get + watch (not kube-runtime's watcher, which lists): the worker Role grants only
    /// get, watch and patch on pods. After an expired resourceVersion (410) or a lost connection it
    /// reads the pod again and watches from there, retrying for as long as the process lives
    /// (jittered backoff, 200 ms to 10 s, and a throttled log, both reset by the next event). Only
    /// the pod's deletion ends it.
    pub async fn watch_drain(
        self,
        tx: watch::Sender<bool>,
        state: watch::Sender<Option<PodState>>,
    ) {
        let publish = |pod: &Pod| {
            let now = PodState::of(pod);
            let d = now.draining;
            tx.send_if_modified(|cur| std::mem::replace(cur, d) != d);
            state.send_if_modified(|cur| cur.replace(now) != Some(now));
        };
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(290);
        let mut backoff = Backoff::new(RETRY_BASE, RETRY_MAX);
        let mut throttle = LogThrottle::new(LOG_FIRST, LOG_EVERY);
        let mut failed = false;
        // The last read failed: the next good read is worth a line.
        let mut unreachable = false;
        'outer: loop {
            if std::mem::take(&mut failed) {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            let mut version = match self.api.get(&self.name).await {
                Ok(pod) => {
                    if std::mem::take(&mut unreachable) {
                        info!("our pod is reachable again; watching it");
                    }
                    publish(&pod);
                    pod.resource_version().unwrap_or_default()
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    debug!("our pod is gone; the pod watch ends");
                    return;
                }
                Err(e) => {
                    failed = watch_failed("reading", &e, &mut throttle);
                    unreachable = true;
                    continue;
                }
            };
            loop {
                let stream = match self.api.watch(&params, &version).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        failed = watch_failed("watching", &e, &mut throttle);
                        continue 'outer;
                    }
                };
                let opened = Instant::now();
                let mut stream = stream.boxed();
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(WatchEvent::Added(pod)) | Ok(WatchEvent::Modified(pod)) => {
                            // Reset here, not after the read: a watch refused right after every
                            // read (a Role without `watch`) must not retry five times a second.
                            backoff.reset();
                            throttle.reset();
                            publish(&pod);
                            version = pod.resource_version().unwrap_or(version);
                        }
                        Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                        Ok(WatchEvent::Deleted(_)) => {
                            debug!("our pod was deleted; the pod watch ends");
                            return;
                        }
                        Ok(WatchEvent::Error(status)) => {
                            // 410 Gone: our resourceVersion is too old; read the pod again.
                            debug!("pod watch: {}", status.message);
                            continue 'outer;
                        }
                        Err(e) => {
                            failed = watch_failed("watching", &e, &mut throttle);
                            continue 'outer;
                        }
                    }
                }
                // The server closed the watch (its timeout): watch on from where we are. A watch
                // that closes at once (a proxy in trouble) must not make this loop spin.
                if opened.elapsed() < Duration::from_secs(1) {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Sets one annotation on the pod.
    pub async fn annotate(&self, key: &str, value: &str) -> Result<()> {
        self.patch(&serde_json::json!({ "metadata": { "annotations": { key: value } } }))
            .await
    }

    /// Applies a merge patch to the pod.
    pub async fn patch(&self, patch: &Value) -> Result<()> {
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(drop)
            .map_err(|source| Error::Kube {
                doing: "patching our pod's annotations",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(a: Activity) -> serde_json::Map<String, Value> {
        activity_patch(a)["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn busy_blocks_node_autoscalers_and_idle_frees_them_in_the_same_patch() {
        let busy = annotations(Activity::Busy);
        assert_eq!(busy.len(), 3);
        assert_eq!(busy[ANNOTATION_ACTIVITY], "busy");
        assert_eq!(busy[ANNOTATION_SAFE_TO_EVICT], "false");
        assert_eq!(busy[ANNOTATION_DO_NOT_DISRUPT], "true");
        let idle = annotations(Activity::Idle);
        assert_eq!(idle.len(), 3);
        assert_eq!(idle[ANNOTATION_ACTIVITY], "idle");
        assert_eq!(idle[ANNOTATION_SAFE_TO_EVICT], "true");
        // null in a merge patch removes the key.
        assert_eq!(idle[ANNOTATION_DO_NOT_DISRUPT], Value::Null);
        assert_eq!(
            ANNOTATION_SAFE_TO_EVICT,
            "cluster-autoscaler.kubernetes.io/safe-to-evict"
        );
        assert_eq!(ANNOTATION_DO_NOT_DISRUPT, "karpenter.sh/do-not-disrupt");
    }

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).expect("a pod")
    }

    #[test]
    fn pod_state_reads_drain_deletion_and_grace() {
        let p = pod(serde_json::json!({"metadata": {"name": "w"}, "spec": {"containers": []}}));
        assert_eq!(PodState::of(&p), PodState::default());
        let p = pod(serde_json::json!({
            "metadata": {"name": "w", "annotations": {"quickube.com/drain": "scale-down"}},
            "spec": {"containers": [], "terminationGracePeriodSeconds": 45}
        }));
        assert_eq!(
            PodState::of(&p),
            PodState {
                draining: true,
                deletion_grace: None,
                termination_grace: Some(45)
            }
        );
        let p = pod(serde_json::json!({
            "metadata": {"name": "w", "deletionTimestamp": "2026-01-01T00:00:30Z",
                         "deletionGracePeriodSeconds": 5},
            "spec": {"containers": [], "terminationGracePeriodSeconds": 45}
        }));
        assert_eq!(PodState::of(&p).deletion_grace, Some(5));
        let p = pod(serde_json::json!({
            "metadata": {"name": "w", "deletionTimestamp": "2026-01-01T00:00:30Z"},
            "spec": {"containers": [], "terminationGracePeriodSeconds": 45}
        }));
        assert_eq!(PodState::of(&p).deletion_grace, Some(45));
    }
}
