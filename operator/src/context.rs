//! What every reconcile and poller shares: the client, the caches, the event recorder, metrics, and
//! the operator's memory per QWorker (stabilization window, expectations, crash-loop streak).
//! A plain struct (STYLE.md, "Reconcile shape"); the in-memory parts sit behind short-held mutexes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::pod_index::PodIndex;
use futures::channel::mpsc::UnboundedSender;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;
use qscaler_crds::{QWorker, ScalerConfig};

use crate::broker::Depth;
use crate::crash::{BackoffSettings, CrashTracker};
use crate::expectations::Expectations;
use crate::metrics::Metrics;
use crate::poller::PollerHandle;
use crate::scaling::Stabilizer;

/// The operator's settings (flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often each ScalerConfig's queues are read.
    pub poll_interval: Duration,
    /// Scale-down stabilization window when the QWorker does not set one.
    pub stabilization: Duration,
    pub backoff: BackoffSettings,
    /// How long a write may stay unseen by the cache before planning stops waiting for it.
    pub expectation_timeout: Duration,
    /// How often a ScalerConfig's secret is re-read and its status refreshed.
    pub health_interval: Duration,
    /// Connect/response timeout towards the broker.
    pub broker_timeout: Duration,
    /// A queue reading older than this is not used (the poller is stuck or gone).
    pub reading_max_age: Duration,
}

/// (namespace, name).
pub type Key = (String, String);

/// The last queue reading of one QWorker, written by its ScalerConfig's poller.
#[derive(Clone, Debug)]
pub struct Reading {
    pub result: Result<Depth, ReadError>,
    pub at: Instant,
}

/// Why a QWorker's queue has no reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The broker did not answer (every QWorker of the ScalerConfig is affected).
    Broker(String),
    /// The broker answered, but this queue's keys could not be read (e.g. a key of the wrong type).
    Queue(String),
}

/// What the operator remembers about one QWorker between reconciles.
#[derive(Debug, Default)]
pub struct Memory {
    pub stabilizer: Option<Stabilizer>,
    pub expectations: Expectations,
    pub crash: CrashTracker,
    /// The full hash whose revision history is known to be in place.
    pub revision_synced: Option<String>,
    /// Whether the crash-loop Event was sent for the current streak.
    pub crash_reported: bool,
    /// Containers seen OOM-killed (their memory request gets the OOM bump).
    pub oom_killed: std::collections::BTreeSet<String>,
    /// The generation whose pod a server-side dry run (or a real create) has checked, and the
    /// API server's refusal of it, if any (a refused generation creates no pod until the spec changes).
    pub spec_check: Option<(Option<i64>, Option<String>)>,
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Pods by namespace and QWorker.
    pub pods: Arc<PodIndex>,
    /// True once the pod and ScalerConfig caches have listed everything.
    pub caches: tokio::sync::watch::Receiver<bool>,
    pub qworkers: Store<QWorker>,
    pub scalers: Store<ScalerConfig>,
    pub readings: Mutex<HashMap<Key, Reading>>,
    pub memory: Mutex<HashMap<Key, Memory>>,
    pub pollers: Mutex<HashMap<Key, PollerHandle>>,
    pub qworker_trigger: UnboundedSender<ObjectRef<QWorker>>,
    pub scaler_trigger: UnboundedSender<ObjectRef<ScalerConfig>>,
}

/// Locks a mutex, recovering from poisoning (a panicked holder cannot leave these maps inconsistent
/// in a way that matters more than stopping the operator would).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Context {
    /// Waits until the caches have listed everything (a cache that has not would look empty).
    pub async fn caches_synced(&self) {
        let mut rx = self.caches.clone();
        let _ = rx.wait_for(|r| *r).await;
    }

    pub fn trigger_qworker(&self, ns: &str, name: &str) {
        let _ = self
            .qworker_trigger
            .unbounded_send(ObjectRef::new(name).within(ns));
    }

    pub fn trigger_scaler(&self, ns: &str, name: &str) {
        let _ = self
            .scaler_trigger
            .unbounded_send(ObjectRef::new(name).within(ns));
    }

    /// The QWorkers (from the cache) that use ScalerConfig `name` in `ns`.
    pub fn qworkers_of(&self, ns: &str, name: &str) -> Vec<Arc<QWorker>> {
        self.qworkers
            .state()
            .into_iter()
            .filter(|q| {
                q.metadata.namespace.as_deref() == Some(ns)
                    && q.spec.scale_config.scaler_config_ref == name
            })
            .collect()
    }
}
