//! One poller per ScalerConfig: one broker connection, all its QWorkers' queues read in one round
//! trip per tick ([`tick`] decides, [`run`] does). The reading goes to [`Readings`]; a QWorker reconcile is triggered only
//! when its desired count changes (or, at most every few seconds, when the depth it shows in status
//! changed), so a busy queue does not mean a busy API server.
//!
//! The poller also returns the in-flight tasks of task-mode pods that died: a pod that turned
//! Succeeded/Failed gets its processing list moved back to the queue. A pod that left the QWorker's
//! view (the cache no longer shows it as the QWorker's: deleted, or its label or owner reference
//! removed, as `kubectl delete qworker --cascade=orphan` does) is looked up with a GET: only when the
//! API says it is gone (404) or terminal is its list returned. A live pod that left is still working
//! on its tasks (returning them would run them twice); it is looked up again every
//! [`tick::SWEEP_EVERY`] until it ends. A slower sweep finds lists whose pod is unknown (it vanished while
//! no operator ran) and returns them when two sweeps in a row found the pod missing from the cache
//! and a GET confirms it is gone or terminal. The sweep only looks at lists
//! of this QWorker's pods (`{<queue>}:processing:<namespace>/<qworker>-...`, found in the
//! queue's registry of consumers `{<queue>}:consumers`, not by a `SCAN`), so a Redis shared with
//! other namespaces' workers, even of a QWorker of the same name on the same queue, is left alone.
//!
//! Each returned task counts as a failed run in the retry count qsupervisor keeps per payload
//! (`{<queue>}:retries`): a pod that died holding it is what a task that kills its container looks
//! like. Past the pod's own `--max-retries` (read from its spec, default 3) the task is moved to
//! `{<queue>}:dead`, as qsupervisor dead-letters. A dead pod's list is returned on the broker the pod
//! consumed from (its env): after a ScalerConfig change that is not the poller's own connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use qscaler_crds::{QWorker, ScalerConfig};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::object_key::ObjectKey;
use crate::pod_index::PodIndex;
use crate::readings::Readings;
use crate::redis_broker::{RedisBroker, RedisParams};
use crate::triggers::Triggers;

mod push;
mod returns;
mod tick;

pub(crate) use push::PushWake;
use returns::give_back;
pub(crate) use returns::{list_owners, look_up, params_of_pod, return_now, PodInfo, Returner};
pub(crate) use tick::Health;
use tick::{alive_pods, Actions, LookUp, QueueView, TickState};

/// What a poller reads (the caches) and the narrow sink it writes to (readings, triggers,
/// metrics); no reconcile state.
#[derive(Clone)]
pub(crate) struct PollerEnv {
    pub pods: Arc<PodIndex>,
    pub qworkers: Store<QWorker>,
    pub scalers: Store<ScalerConfig>,
    /// True once the caches have listed everything.
    pub caches: watch::Receiver<bool>,
    pub poll_interval: Duration,
    pub readings: Arc<Readings>,
    pub triggers: Triggers,
    pub returner: Returner,
}

/// The QWorkers (from the cache) that use ScalerConfig `sc`.
pub(crate) fn qworkers_of(qworkers: &Store<QWorker>, sc: &ObjectKey) -> Vec<Arc<QWorker>> {
    qworkers
        .state()
        .into_iter()
        .filter(|q| {
            q.metadata.namespace.as_deref() == Some(sc.namespace.as_str())
                && q.spec.scale_config.scaler_config_ref == sc.name
        })
        .collect()
}

/// A running poller; dropping it stops the task.
pub(crate) struct PollerHandle {
    params: RedisParams,
    health: watch::Receiver<Option<Health>>,
    task: JoinHandle<()>,
    /// The keyspace subscription (see [`push`]).
    push_task: JoinHandle<()>,
}

impl PollerHandle {
    /// False once the task ended (its ScalerConfig vanished from the cache).
    fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for PollerHandle {
    fn drop(&mut self) {
        self.task.abort();
        self.push_task.abort();
    }
}

/// The running pollers, one per ScalerConfig; the only place their lock is taken.
#[derive(Default)]
pub(crate) struct Pollers {
    by_scaler: Mutex<HashMap<ObjectKey, PollerHandle>>,
}

impl Pollers {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, PollerHandle>> {
        // Handles only: a panicked holder cannot leave them inconsistent.
        self.by_scaler.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure `sc`'s poller runs with `params` (starting or restarting it); returns its health
    /// and whether it was (re)started.
    pub fn ensure(
        &self,
        env: &PollerEnv,
        sc: &ObjectKey,
        params: RedisParams,
    ) -> (watch::Receiver<Option<Health>>, bool) {
        let mut map = self.map();
        let restart = map
            .get(sc)
            .is_none_or(|p| p.params != params || !p.is_running());
        if restart {
            map.insert(sc.clone(), spawn(env.clone(), sc.clone(), params));
        }
        let health = map
            .get(sc)
            .map(|p| p.health.clone())
            .unwrap_or_else(|| watch::channel(None).1);
        (health, restart)
    }

    pub fn stop(&self, sc: &ObjectKey) {
        self.map().remove(sc);
    }

    pub fn stop_all(&self) {
        self.map().clear();
    }

    /// The broker settings `sc`'s running poller uses, if one runs.
    pub fn params(&self, sc: &ObjectKey) -> Option<RedisParams> {
        self.map().get(sc).map(|p| p.params.clone())
    }
}

fn spawn(env: PollerEnv, key: ObjectKey, params: RedisParams) -> PollerHandle {
    let (tx, rx) = watch::channel(None);
    let broker = RedisBroker::new(params.clone(), env.returner.broker_timeout);
    let (state_tx, state) = watch::channel(None);
    let (qworkers, sc) = (env.qworkers.clone(), key.clone());
    let queues: push::Queues = Box::new(move || {
        qworkers_of(&qworkers, &sc)
            .iter()
            .flat_map(|q| {
                let names = q.spec.scale_config.queue_names();
                names.into_iter().map(str::to_owned).collect::<Vec<_>>()
            })
            .collect()
    });
    let wake = Arc::new(Notify::new());
    let push_task = tokio::spawn(
        push::Subscriber {
            params: params.clone(),
            timeout: env.returner.broker_timeout,
            queues,
            wake: wake.clone(),
            state: state_tx,
            check_every: push::CHECK_EVERY,
            scaler: key.to_string(),
        }
        .run(),
    );
    let push = PushSide { wake, state };
    let task = tokio::spawn(run(env, key, broker, params.clone(), tx, push));
    PollerHandle {
        params,
        health: rx,
        task,
        push_task,
    }
}

/// The poller's end of the keyspace subscription: what wakes it, what the subscription found.
struct PushSide {
    wake: Arc<Notify>,
    state: watch::Receiver<Option<PushWake>>,
}

/// The I/O loop: read the caches, ask the broker, let [`TickState::tick`] decide, carry it out.
async fn run<B: Broker>(
    env: PollerEnv,
    key: ObjectKey,
    mut broker: B,
    params: RedisParams,
    health_tx: watch::Sender<Option<Health>>,
    mut push: PushSide,
) {
    let _ = env.caches.clone().wait_for(|r| *r).await;
    let mut ticker = tokio::time::interval(env.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = TickState::new(Instant::now());
    let sc_ref = ObjectRef::new(&key.name).within(&key.namespace);
    let labels = [
        ("namespace", key.namespace.as_str()),
        ("scalerconfig", key.name.as_str()),
    ];
    let mut last_tick: Option<tokio::time::Instant> = None;
    loop {
        // The regular tick, or a push (never sooner than MIN_WAKE_GAP after the last tick).
        let woken = tokio::select! {
            _ = ticker.tick() => false,
            _ = push.wake.notified() => true,
            // Whether a push can wake us changed (the subscription's first look at the setting,
            // or notifications turned on or off): a tick now puts it in the ScalerConfig's status
            // instead of a poll interval later.
            Ok(()) = push.state.changed() => false,
        };
        if woken {
            if let Some(t) = last_tick {
                tokio::time::sleep_until(t + push::MIN_WAKE_GAP).await;
            }
            ticker.reset();
            env.returner
                .metrics
                .inc("qscaler_poller_wakes_total", &labels, 1.0);
        }
        last_tick = Some(tokio::time::Instant::now());
        if env.scalers.get(&sc_ref).is_none() {
            tracing::info!(namespace = %key.namespace, scalerconfig = %key.name, "ScalerConfig gone; poller stops");
            break;
        }
        let pods = env.pods.by_qworker(&key.namespace);
        let views: Vec<QueueView> = qworkers_of(&env.qworkers, &key)
            .iter()
            .map(|q| {
                let mine = q.metadata.name.as_ref().and_then(|n| pods.get(n.as_str()));
                QueueView::of(q, mine.map(Vec::as_slice).unwrap_or_default())
            })
            .collect();
        let queries: Vec<_> = views.iter().flat_map(|v| v.queries.clone()).collect();
        let result = if queries.is_empty() {
            broker.ping().await.map(|_| vec![])
        } else {
            broker.depths(&queries).await
        };
        let read = if result.is_ok() { "ok" } else { "error" };
        env.returner.metrics.inc(
            "qscaler_queue_reads_total",
            &[labels[0], labels[1], ("result", read)],
            1.0,
        );
        let mut actions = state.tick(&views, &result, Instant::now());
        if let (Some(h), Some(p)) = (actions.health.as_mut(), push.state.borrow().as_ref()) {
            if h.ok {
                h.message = p.message();
            }
        }
        let ns_pods: Vec<Arc<Pod>> = pods.values().flatten().cloned().collect();
        let mut io = Io {
            env: &env,
            key: &key,
            broker: &mut broker,
            params: &params,
        };
        io.carry_out(actions, &mut state, &views, &ns_pods, &health_tx)
            .await;
    }
    let mine: Vec<ObjectKey> = qworkers_of(&env.qworkers, &key)
        .iter()
        .map(|q| ObjectKey::of(q.as_ref()))
        .collect();
    env.readings.forget_all(&mine);
}

/// One tick's effects.
struct Io<'a, B> {
    env: &'a PollerEnv,
    key: &'a ObjectKey,
    broker: &'a mut B,
    params: &'a RedisParams,
}

impl<B: Broker> Io<'_, B> {
    async fn carry_out(
        &mut self,
        a: Actions,
        state: &mut TickState,
        views: &[QueueView],
        ns_pods: &[Arc<Pod>],
        health_tx: &watch::Sender<Option<Health>>,
    ) {
        let env = self.env;
        if let Some(health) = a.health {
            self.report_health(health, health_tx);
        }
        for (qw, e) in &a.unreadable {
            tracing::warn!(namespace = %qw.namespace, qworker = %qw.name, error = %e, "queue unreadable; its replicas are held");
        }
        for (qw, reading) in a.readings {
            env.readings.put(qw, reading);
        }
        for qw in &a.trigger {
            env.triggers.qworker(qw);
        }
        for r in &a.give_back {
            if self.give_back(&r.qw, &r.queue, &r.pod, &r.info).await {
                state.returned(&r.pod);
            }
        }
        for (pod, d) in &a.look_up {
            // The cache only says the pod is no longer this QWorker's; the API says whether it runs.
            let fate = look_up(&env.returner.client, &d.qw.namespace, pod).await;
            if let Err(e) = &fate {
                tracing::warn!(namespace = %d.qw.namespace, pod, error = %e, "could not look up a pod that left its QWorker; will retry");
            }
            match state.looked_up(pod, fate.map_err(|_| ()), Instant::now()) {
                LookUp::GiveBack => {
                    if self.give_back(&d.qw, &d.queue, pod, &d.info).await {
                        state.departed_returned(pod);
                    }
                }
                LookUp::Wait { first: true } => {
                    tracing::info!(namespace = %d.qw.namespace, qworker = %d.qw.name, pod, "pod left the QWorker but still runs: its in-flight tasks stay with it until it ends");
                }
                LookUp::Wait { first: false } | LookUp::Retry => {}
            }
        }
        if a.sweep {
            let alive = alive_pods(ns_pods);
            let mut sweep = state.sweep();
            for v in views {
                let owners = match self
                    .broker
                    .in_flight_owners(&v.queue, &v.qw.namespace)
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!(queue = %v.queue, error = %e, "sweep of in-flight lists failed");
                        continue;
                    }
                };
                // Missing from the cache twice; the API decides (a pod without its label still runs).
                for pod in sweep.owners(v, owners, &alive) {
                    match look_up(&env.returner.client, &v.qw.namespace, &pod).await {
                        Ok(fate) if fate.may_return() => {
                            self.give_back(&v.qw, &v.queue, &pod, &v.template).await;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(namespace = %v.qw.namespace, pod, error = %e, "could not look up the owner of an in-flight list");
                            sweep.unresolved(&v.queue, &pod);
                        }
                    }
                }
            }
        }
    }

    async fn give_back(&mut self, qw: &ObjectKey, queue: &str, pod: &str, info: &PodInfo) -> bool {
        give_back(
            &self.env.returner,
            self.broker,
            self.params,
            qw,
            queue,
            pod,
            info,
        )
        .await
    }

    /// The health gauge, and on a flip a log line and the ScalerConfig's reconcile (its status).
    fn report_health(&self, health: Health, health_tx: &watch::Sender<Option<Health>>) {
        let key = self.key;
        self.env.returner.metrics.set(
            "qscaler_broker_healthy",
            &[("namespace", &key.namespace), ("scalerconfig", &key.name)],
            if health.ok { 1.0 } else { 0.0 },
        );
        // A healthy broker's message (what push wake-ups do) is stable; an error's may vary.
        let seen = |h: &Health| (h.ok, h.auth_failed, h.ok.then(|| h.message.clone()));
        let flipped = health_tx.send_if_modified(|h| {
            let changed = h.as_ref().map(seen) != Some(seen(&health));
            *h = Some(health.clone());
            changed
        });
        if flipped {
            if health.ok {
                tracing::info!(namespace = %key.namespace, scalerconfig = %key.name, "broker reachable");
            } else {
                tracing::warn!(namespace = %key.namespace, scalerconfig = %key.name, error = %health.message, "broker unreachable");
            }
            self.env.triggers.scaler(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_broker::FakeBroker;
    use crate::metrics::Metrics;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use kube::runtime::reflector;
    use qscaler_crds::names::keys;
    use serde_json::json;
    use tower_test::mock;

    fn env(client: kube::Client) -> PollerEnv {
        let (qworker, _) = futures::channel::mpsc::unbounded();
        let (scaler, _) = futures::channel::mpsc::unbounded();
        PollerEnv {
            pods: Arc::new(PodIndex::default()),
            qworkers: reflector::store::<QWorker>().0,
            scalers: reflector::store::<ScalerConfig>().0,
            caches: watch::channel(true).1,
            poll_interval: Duration::from_secs(1),
            readings: Arc::new(Readings::default()),
            triggers: Triggers { qworker, scaler },
            returner: Returner {
                client,
                metrics: Arc::new(Metrics::default()),
                broker_timeout: Duration::from_secs(1),
            },
        }
    }

    fn qworker() -> QWorker {
        let mut qw = QWorker::new(
            "w",
            serde_json::from_value(json!({
                "podSpec": {"containers": [{"name": "c", "image": "i"}]},
                "scaleConfig": {"scalerConfigRef": "s", "queue": "q", "maxReplicas": 5}
            }))
            .unwrap(),
        );
        qw.metadata.namespace = Some("ns".into());
        qw.metadata.uid = Some("u1".into());
        qw
    }

    fn worker(name: &str, phase: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns",
                    "labels": {qscaler_crds::names::LABEL_QWORKER: "w"},
                    "ownerReferences": [{"apiVersion": "v", "kind": "QWorker", "name": "w",
                        "uid": "u1", "controller": true}]},
                "status": {"phase": phase}
            }))
            .unwrap(),
        )
    }

    fn list(pod: &str) -> String {
        keys::processing("q", &keys::consumer(Some("ns"), pod))
    }

    /// An ended worker's list goes back at once; a list whose pod the cache never showed goes
    /// back only after two sweeps missed it and the API said 404; a live worker's list stays.
    #[tokio::test]
    async fn ticks_return_ended_and_vanished_workers_tasks_and_leave_live_ones() {
        let (service, mut api) = mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            let (req, send) = api.next_request().await.expect("one look-up");
            assert_eq!(req.method(), Method::GET);
            assert_eq!(req.uri().path(), "/api/v1/namespaces/ns/pods/w-gone");
            let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": "pods \"w-gone\" not found"});
            send.send_response(
                Response::builder()
                    .status(404)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
            assert!(api.next_request().await.is_none(), "no other request");
        });
        let env = env(kube::Client::new(service, "ns"));
        let mut broker = FakeBroker::default();
        for pod in ["w-done", "w-gone", "w-live"] {
            broker
                .lists
                .insert(list(pod), vec![format!("task-of-{pod}")]);
        }
        let pods = [worker("w-done", "Succeeded"), worker("w-live", "Running")];
        let views = [QueueView::of(&qworker(), &pods)];
        let key = ObjectKey::new("ns", "s");
        let (health_tx, health) = watch::channel(None);
        let t0 = Instant::now();
        let mut state = TickState::new(t0);
        let params = RedisParams {
            host: "redis".into(),
            port: 6379,
            db: 0,
            username: None,
            password: None,
            tls: false,
            tls_insecure: false,
            tls_ca: None,
            topology: Default::default(),
        };
        for at in [t0, t0 + tick::SWEEP_EVERY, t0 + tick::SWEEP_EVERY * 2] {
            let result = broker.depths(&views[0].queries).await;
            let actions = state.tick(&views, &result, at);
            let mut io = Io {
                env: &env,
                key: &key,
                broker: &mut broker,
                params: &params,
            };
            io.carry_out(actions, &mut state, &views, &pods, &health_tx)
                .await;
            if at == t0 {
                assert!(
                    !broker.lists.contains_key(&list("w-done")),
                    "ended: returned"
                );
                assert!(
                    broker.lists.contains_key(&list("w-gone")),
                    "unknown: not yet"
                );
            }
        }
        drop(env);
        server.await.unwrap();
        assert!(!broker.lists.contains_key(&list("w-gone")));
        assert!(broker.lists.contains_key(&list("w-live")));
        assert_eq!(
            broker.lists.get("q").map(Vec::len),
            Some(2),
            "{:?}",
            broker.lists
        );
        assert!(health.borrow().as_ref().is_some_and(|h| h.ok));
    }
}
