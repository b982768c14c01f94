//! One poller per ScalerConfig: one broker connection, all its QWorkers' queues read in one round
//! trip per tick. The reading goes to [`Context::readings`]; a QWorker reconcile is triggered only
//! when its desired count changes (or, at most every few seconds, when the depth it shows in status
//! changed), so a busy queue does not mean a busy API server.
//!
//! The poller also returns the in-flight tasks of task-mode pods that died: a pod that turned
//! Succeeded/Failed gets its processing list moved back to the queue. A pod that left the QWorker's
//! view (the cache no longer shows it as the QWorker's: deleted, or its label or owner reference
//! removed, as `kubectl delete qworker --cascade=orphan` does) is looked up with a GET: only when the
//! API says it is gone (404) or terminal is its list returned. A live pod that left is still working
//! on its tasks (returning them would run them twice); it is looked up again every
//! [`SWEEP_EVERY`] until it ends. A slower sweep finds lists whose pod is unknown (it vanished while
//! no operator ran) and returns them when two sweeps in a row found the pod missing from the cache
//! and a GET confirms it is gone or terminal. The sweep only looks at lists
//! of this QWorker's pods (`<queue>:processing:<namespace>/<qworker>-...`), so a Redis shared with
//! other namespaces' workers, even of a QWorker of the same name on the same queue, is left alone.
//!
//! Each returned task counts as a failed run in the retry count qsupervisor keeps per payload
//! (`<queue>:retries`): a pod that died holding it is what a task that kills its container looks
//! like. Past the pod's own `--max-retries` (read from its spec, default 3) the task is moved to
//! `<queue>:dead`, as qsupervisor dead-letters. A dead pod's list is returned on the broker the pod
//! consumed from (its env): after a ScalerConfig change that is not the poller's own connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::ObjectRef;
use qscaler_crds::names::keys;
use qscaler_crds::scalerconfig::SecretKeyRef;
use qscaler_crds::{task, QWorker};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::{Broker, BrokerError, Depth, QueueQuery, Returned};
use crate::context::{lock, Context, Key, ReadError, Reading};
use crate::observe::owned_by;
use crate::pods::{broker_of, PodBroker};
use crate::redis_broker::{RedisBroker, RedisParams};
use crate::scaling::raw_desired;

/// Broker health as a poller last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub ok: bool,
    pub auth_failed: bool,
    pub message: String,
}

/// A running poller; dropping it stops the task.
pub struct PollerHandle {
    pub params: RedisParams,
    pub health: watch::Receiver<Option<Health>>,
    task: JoinHandle<()>,
}

impl PollerHandle {
    /// False once the task ended (its ScalerConfig vanished from the cache).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for PollerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The least time between two triggers caused only by a changed depth (status display).
pub const STATUS_REFRESH: Duration = Duration::from_secs(3);
/// How often lists of unknown pods are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What a poller last told a QWorker about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Told {
    pub desired: Option<i32>,
    pub depth: Option<Depth>,
    pub at: Instant,
}

/// Whether a new reading is worth a reconcile: the desired count (or reachability) changed, or the
/// depth changed and the last trigger is older than [`STATUS_REFRESH`].
pub fn should_trigger(
    told: Option<&Told>,
    desired: Option<i32>,
    depth: Option<Depth>,
    now: Instant,
) -> bool {
    match told {
        None => true,
        Some(t) => {
            t.desired != desired
                || (t.depth != depth && now.saturating_duration_since(t.at) >= STATUS_REFRESH)
        }
    }
}

pub fn spawn(ctx: Arc<Context>, key: Key, params: RedisParams) -> PollerHandle {
    let (tx, rx) = watch::channel(None);
    let broker = RedisBroker::new(params.clone(), ctx.settings.broker_timeout);
    let task = tokio::spawn(run(ctx, key, broker, params.clone(), tx));
    PollerHandle {
        params,
        health: rx,
        task,
    }
}

fn is_terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// What the API says of a pod whose tasks might be returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// No such pod (404): no process of it can still hold a task.
    Gone,
    /// Succeeded or Failed: its containers have stopped.
    Ended,
    /// Still Pending/Running/Unknown, whatever its labels and owners say now.
    Alive,
}

impl Fate {
    /// From a GET of the pod (`None`: 404).
    pub fn of(pod: Option<&Pod>) -> Fate {
        match pod {
            None => Fate::Gone,
            Some(p) if is_terminal(p) => Fate::Ended,
            Some(_) => Fate::Alive,
        }
    }

    /// Whether the pod's processing list may go back to the queue: only when nothing of it runs.
    pub fn may_return(self) -> bool {
        self != Fate::Alive
    }
}

/// What the poller keeps of a pod to return its tasks once it is gone.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInfo {
    /// The supervisor's retry limit in this pod: a task whose pod died more often than this is
    /// dead-lettered instead of returned.
    pub max_retries: u32,
    /// The broker the pod consumes from (its env), where its processing list is; `None`: the
    /// ScalerConfig's current one.
    pub broker: Option<PodBroker>,
}

impl PodInfo {
    pub fn of(pod: &Pod) -> PodInfo {
        PodInfo {
            max_retries: pod
                .spec
                .as_ref()
                .map(task::max_retries)
                .unwrap_or(task::DEFAULT_MAX_RETRIES),
            broker: broker_of(pod),
        }
    }

    /// For a list whose pod the poller never saw: as the QWorker's current template says.
    pub fn of_template(qw: &QWorker) -> PodInfo {
        PodInfo {
            max_retries: task::max_retries(&qw.spec.pod_spec),
            broker: None,
        }
    }
}

/// Whether `pod` consumes from the broker `params` reach (the poller's own connection serves it).
pub fn same_broker(pod: &PodBroker, params: &RedisParams) -> bool {
    pod.host == params.host
        && pod.port == params.port
        && pod.db == params.db
        && pod.tls == params.tls
        && pod.username == params.username
}

/// The settings that reach a pod's broker, with the secrets the pod reads (resolved by the
/// caller). On the same server as the current settings (a db switch), a password or CA the pod
/// does not read from a Secret is the current one (an inline password is never in a pod).
pub fn params_for(
    pod: &PodBroker,
    current: &RedisParams,
    password: Option<String>,
    ca: Option<Vec<u8>>,
) -> RedisParams {
    let same_server = pod.host == current.host && pod.port == current.port;
    RedisParams {
        host: pod.host.clone(),
        port: pod.port,
        db: pod.db,
        username: pod.username.clone(),
        password: password.or_else(|| current.password.clone().filter(|_| same_server)),
        tls: pod.tls,
        tls_insecure: pod.tls_insecure,
        tls_ca: ca.or_else(|| current.tls_ca.clone().filter(|_| same_server)),
    }
}

/// The bytes of a Secret key the pod reads (in its namespace); `None`, logged, when unreadable.
async fn secret(ctx: &Context, ns: &str, r: &SecretKeyRef) -> Option<Vec<u8>> {
    let api: kube::Api<Secret> = kube::Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(&r.name).await {
        Ok(s) => s
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(&r.key))
            .map(|b| b.0),
        Err(e) => {
            tracing::warn!(namespace = ns, secret = %r.name, error = %e, "could not read a dead pod's broker secret");
            None
        }
    }
}

/// A pod that left a QWorker's view and whose processing list is not returned yet.
#[derive(Clone, Debug)]
struct Departed {
    qw: Key,
    queue: String,
    info: PodInfo,
    /// When to look it up (again).
    check_at: Instant,
    /// Whether "it still runs" was logged.
    told: bool,
}

/// Pods of `before` that are not in `now`: they left the view since the last tick.
fn left_view<'a>(
    before: impl IntoIterator<Item = &'a String>,
    now: &HashSet<String>,
) -> Vec<&'a String> {
    let mut out: Vec<&String> = before.into_iter().filter(|p| !now.contains(*p)).collect();
    out.sort();
    out
}

/// One GET of `pod`: what became of it.
async fn look_up(ctx: &Context, ns: &str, pod: &str) -> kube::Result<Fate> {
    let api: kube::Api<Pod> = kube::Api::namespaced(ctx.client.clone(), ns);
    Ok(Fate::of(api.get_opt(pod).await?.as_ref()))
}

struct QueueView {
    qw: Key,
    queue: String,
    prefix: String,
    query: QueueQuery,
    terminal: Vec<String>,
    present: HashSet<String>,
    /// Of every present pod.
    info: HashMap<String, PodInfo>,
    /// For lists of pods never seen (the sweep).
    template: PodInfo,
}

/// What the poller needs of one QWorker; `pods` are those labelled as its (ownership is checked here).
fn view(qw: &QWorker, pods: &[Arc<Pod>]) -> QueueView {
    let mut alive = vec![];
    let mut terminal = vec![];
    let mut present = HashSet::new();
    let mut info = HashMap::new();
    for p in pods.iter().filter(|p| owned_by(p, qw)) {
        let name = p.metadata.name.clone().unwrap_or_default();
        present.insert(name.clone());
        info.insert(name.clone(), PodInfo::of(p));
        if is_terminal(p) {
            terminal.push(name);
        } else {
            alive.push(name);
        }
    }
    let queue = qw.spec.scale_config.queue.clone();
    let ns = qw.metadata.namespace.clone().unwrap_or_default();
    QueueView {
        query: QueueQuery {
            queue: queue.clone(),
            consumers: alive
                .iter()
                .map(|pod| keys::consumer(Some(&ns), pod))
                .collect(),
        },
        qw: (ns, qw.metadata.name.clone().unwrap_or_default()),
        prefix: format!("{}-", qw.metadata.name.as_deref().unwrap_or_default()),
        queue,
        terminal,
        present,
        info,
        template: PodInfo::of_template(qw),
    }
}

async fn run<B: Broker>(
    ctx: Arc<Context>,
    key: Key,
    mut broker: B,
    params: RedisParams,
    health_tx: watch::Sender<Option<Health>>,
) {
    let (ns, name) = key.clone();
    ctx.caches_synced().await;
    let mut ticker = tokio::time::interval(ctx.settings.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut told: HashMap<Key, Told> = HashMap::new();
    // Pods seen (alive or terminal) per QWorker at the last tick, and lists already returned.
    let mut seen: HashMap<Key, (String, HashMap<String, PodInfo>)> = HashMap::new();
    let mut returned: HashSet<String> = HashSet::new();
    let mut departed: HashMap<String, Departed> = HashMap::new();
    let mut orphans: HashSet<(String, String)> = HashSet::new();
    let mut last_sweep = Instant::now();
    let sc_ref = ObjectRef::new(&name).within(&ns);
    loop {
        ticker.tick().await;
        if ctx.scalers.get(&sc_ref).is_none() {
            tracing::info!(namespace = %ns, scalerconfig = %name, "ScalerConfig gone; poller stops");
            break;
        }
        let qworkers = ctx.qworkers_of(&ns, &name);
        let pods = ctx.pods.by_qworker(&ns);
        let views: Vec<QueueView> = qworkers
            .iter()
            .map(|q| {
                let mine = q.metadata.name.as_ref().and_then(|n| pods.get(n.as_str()));
                view(q, mine.map(Vec::as_slice).unwrap_or_default())
            })
            .collect();
        let queries: Vec<QueueQuery> = views.iter().map(|v| v.query.clone()).collect();
        let result = if queries.is_empty() {
            broker.ping().await.map(|_| vec![])
        } else {
            broker.depths(&queries).await
        };
        let now = Instant::now();
        let health = match &result {
            Ok(_) => Health {
                ok: true,
                auth_failed: false,
                message: "connected".into(),
            },
            Err(e) => Health {
                ok: false,
                auth_failed: matches!(e, BrokerError::Auth(_)),
                message: e.to_string(),
            },
        };
        ctx.metrics.set(
            "qscaler_broker_healthy",
            &[("namespace", &ns), ("scalerconfig", &name)],
            if health.ok { 1.0 } else { 0.0 },
        );
        let flipped = health_tx.send_if_modified(|h| {
            let changed =
                h.as_ref().map(|h| (h.ok, h.auth_failed)) != Some((health.ok, health.auth_failed));
            *h = Some(health.clone());
            changed
        });
        if flipped {
            if health.ok {
                tracing::info!(namespace = %ns, scalerconfig = %name, "broker reachable");
            } else {
                tracing::warn!(namespace = %ns, scalerconfig = %name, error = %health.message, "broker unreachable");
            }
            ctx.trigger_scaler(&ns, &name);
        }

        for (i, (v, qw)) in views.iter().zip(&qworkers).enumerate() {
            let (desired, depth, reading) = match &result {
                Ok(depths) => match depths.get(i).cloned().unwrap_or(Ok(Depth::default())) {
                    Ok(d) => {
                        let sc = &qw.spec.scale_config;
                        let desired = raw_desired(
                            d.backlog(),
                            sc.scaling_factor,
                            sc.min_replicas,
                            sc.max_replicas,
                        );
                        (Some(desired), Some(d), Ok(d))
                    }
                    Err(e) => {
                        if told.get(&v.qw).is_none_or(|t| t.desired.is_some()) {
                            tracing::warn!(namespace = %v.qw.0, qworker = %v.qw.1, error = %e, "queue unreadable; its replicas are held");
                        }
                        (None, None, Err(ReadError::Queue(e.to_string())))
                    }
                },
                Err(e) => (None, None, Err(ReadError::Broker(e.to_string()))),
            };
            lock(&ctx.readings).insert(
                v.qw.clone(),
                Reading {
                    result: reading,
                    at: now,
                },
            );
            if should_trigger(told.get(&v.qw), desired, depth, now) {
                told.insert(
                    v.qw.clone(),
                    Told {
                        desired,
                        depth,
                        at: now,
                    },
                );
                ctx.trigger_qworker(&v.qw.0, &v.qw.1);
            }
        }

        if result.is_ok() {
            return_dead_pods_tasks(
                &ctx,
                &mut broker,
                &params,
                &views,
                &mut seen,
                &mut returned,
                &mut departed,
            )
            .await;
            if now.saturating_duration_since(last_sweep) >= SWEEP_EVERY {
                last_sweep = now;
                let ns_pods: Vec<Arc<Pod>> = pods.values().flatten().cloned().collect();
                sweep_orphans(&ctx, &mut broker, &params, &views, &ns_pods, &mut orphans).await;
            }
        }
        let keys: HashSet<&Key> = views.iter().map(|v| &v.qw).collect();
        told.retain(|k, _| keys.contains(k));
    }
    let mut readings = lock(&ctx.readings);
    readings.retain(|(rns, rname), _| {
        !(rns == &ns
            && ctx
                .qworkers_of(&ns, &name)
                .iter()
                .any(|q| q.metadata.name.as_deref() == Some(rname)))
    });
}

/// Returns a dead pod's processing list (see the module doc); false when it must be tried again.
/// A list in another broker than the poller's (the ScalerConfig changed since the pod was
/// created) is returned by a task of its own, so an old broker that is slow or gone never stalls
/// the poller: it retries with backoff for [`ELSEWHERE_FOR`], then says what it left behind.
async fn give_back<B: Broker>(
    ctx: &Arc<Context>,
    broker: &mut B,
    params: &RedisParams,
    qw: &Key,
    queue: &str,
    pod: &str,
    info: &PodInfo,
) -> bool {
    if let Some(b) = info.broker.as_ref().filter(|b| !same_broker(b, params)) {
        tokio::spawn(return_elsewhere(
            ctx.clone(),
            b.clone(),
            params.clone(),
            qw.clone(),
            queue.to_string(),
            pod.to_string(),
            info.max_retries,
        ));
        return true;
    }
    let consumer = keys::consumer(Some(&qw.0), pod);
    match broker
        .return_in_flight(queue, &consumer, info.max_retries)
        .await
    {
        Ok(r) => {
            report_returned(ctx, qw, queue, pod, info.max_retries, r);
            true
        }
        Err(e) => {
            tracing::warn!(pod, error = %e, "could not return in-flight tasks; will retry");
            false
        }
    }
}

/// How long a list in another broker is retried.
const ELSEWHERE_FOR: Duration = Duration::from_secs(30 * 60);

/// Returns a dead pod's list on the broker the pod used (not the poller's), with the secrets the
/// pod reads; retries with backoff (1 s doubling to 60 s) for [`ELSEWHERE_FOR`].
async fn return_elsewhere(
    ctx: Arc<Context>,
    pod_broker: PodBroker,
    current: RedisParams,
    qw: Key,
    queue: String,
    pod: String,
    max_retries: u32,
) {
    let consumer = keys::consumer(Some(&qw.0), &pod);
    let started = Instant::now();
    let mut delay = Duration::from_secs(1);
    loop {
        let password = match &pod_broker.password {
            Some(r) => secret(&ctx, &qw.0, r).await.map(|v| {
                String::from_utf8_lossy(&v)
                    .trim_end_matches('\n')
                    .to_string()
            }),
            None => None,
        };
        let ca = match &pod_broker.ca {
            Some(r) => secret(&ctx, &qw.0, r).await,
            None => None,
        };
        let theirs = params_for(&pod_broker, &current, password, ca);
        let url = theirs.display_url();
        tracing::info!(namespace = %qw.0, qworker = %qw.1, pod, broker = %url, current = %current.display_url(), "returning a dead pod's tasks on the broker it used, not the ScalerConfig's current one");
        match RedisBroker::new(theirs, ctx.settings.broker_timeout)
            .return_in_flight(&queue, &consumer, max_retries)
            .await
        {
            Ok(r) => {
                report_returned(&ctx, &qw, &queue, &pod, max_retries, r);
                return;
            }
            Err(e) if started.elapsed() + delay > ELSEWHERE_FOR => {
                tracing::error!(namespace = %qw.0, qworker = %qw.1, pod, broker = %url, list = %keys::processing(&queue, &consumer), error = %e, "gave up returning a dead pod's tasks: they are still in its list on that broker");
                return;
            }
            Err(e) => {
                tracing::warn!(namespace = %qw.0, pod, broker = %url, error = %e, retry_in = ?delay, "could not return a dead pod's tasks on the broker it used; will retry");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// The settings that reach the broker `info` says a pod consumed from: the ScalerConfig's current
/// ones (its poller's) when they are the same broker, else the pod's own with the secrets it reads.
/// `None` when neither is known (no ScalerConfig and a pod without broker env: nothing to return).
pub async fn params_of_pod(
    ctx: &Context,
    ns: &str,
    current: Option<&RedisParams>,
    info: &PodInfo,
) -> Option<RedisParams> {
    match (&info.broker, current) {
        (Some(b), Some(c)) if same_broker(b, c) => Some(c.clone()),
        (Some(b), current) => {
            let password = match &b.password {
                Some(r) => secret(ctx, ns, r).await.map(|v| {
                    String::from_utf8_lossy(&v)
                        .trim_end_matches('\n')
                        .to_string()
                }),
                None => None,
            };
            let ca = match &b.ca {
                Some(r) => secret(ctx, ns, r).await,
                None => None,
            };
            let own = RedisParams {
                host: b.host.clone(),
                port: b.port,
                db: b.db,
                username: b.username.clone(),
                password: None,
                tls: b.tls,
                tls_insecure: b.tls_insecure,
                tls_ca: None,
            };
            Some(params_for(b, current.unwrap_or(&own), password, ca))
        }
        (None, Some(c)) => Some(c.clone()),
        (None, None) => None,
    }
}

/// The current settings of ScalerConfig `sc` in `ns` (its running poller's), if any.
pub fn current_params(ctx: &Context, ns: &str, sc: &str) -> Option<RedisParams> {
    lock(&ctx.pollers)
        .get(&(ns.to_string(), sc.to_string()))
        .map(|p| p.params.clone())
}

/// Returns `pod`'s processing list now, on the broker it consumed from (the QWorker deletion's
/// path; the same atomic, retry-counting return as the poller's). `Ok(None)`: no broker known.
pub async fn return_now(
    ctx: &Context,
    qw: &Key,
    sc: &str,
    queue: &str,
    pod: &str,
    info: &PodInfo,
) -> Result<Option<Returned>, BrokerError> {
    let current = current_params(ctx, &qw.0, sc);
    let Some(params) = params_of_pod(ctx, &qw.0, current.as_ref(), info).await else {
        return Ok(None);
    };
    let consumer = keys::consumer(Some(&qw.0), pod);
    let r = RedisBroker::new(params, ctx.settings.broker_timeout)
        .return_in_flight(queue, &consumer, info.max_retries)
        .await?;
    report_returned(ctx, qw, queue, pod, info.max_retries, r);
    Ok(Some(r))
}

/// The pods of `ns` holding a processing list of `queue` on broker `params`.
pub async fn list_owners(
    ctx: &Context,
    params: RedisParams,
    queue: &str,
    ns: &str,
) -> Result<Vec<String>, BrokerError> {
    RedisBroker::new(params, ctx.settings.broker_timeout)
        .in_flight_owners(queue, ns)
        .await
}

/// Whether the API says `pod` may give its tasks back (gone or ended).
pub async fn may_return(ctx: &Context, ns: &str, pod: &str) -> kube::Result<bool> {
    Ok(look_up(ctx, ns, pod).await?.may_return())
}

/// Logs and counts what a return did.
fn report_returned(ctx: &Context, qw: &Key, queue: &str, pod: &str, max_retries: u32, r: Returned) {
    let labels = [("namespace", qw.0.as_str()), ("qworker", qw.1.as_str())];
    if r.requeued > 0 {
        tracing::info!(namespace = %qw.0, qworker = %qw.1, pod, tasks = r.requeued, "returned in-flight tasks of a dead pod to the queue (each counted as a retry)");
        ctx.metrics
            .inc("qscaler_tasks_returned_total", &labels, r.requeued as f64);
    }
    if r.dead_lettered > 0 {
        tracing::warn!(namespace = %qw.0, qworker = %qw.1, pod, tasks = r.dead_lettered, max_retries, dead_letter = %keys::dead_letter(queue), "tasks whose pods kept dying moved to the dead-letter list");
        ctx.metrics.inc(
            "qscaler_tasks_dead_lettered_total",
            &labels,
            r.dead_lettered as f64,
        );
    }
}

async fn return_dead_pods_tasks<B: Broker>(
    ctx: &Arc<Context>,
    broker: &mut B,
    params: &RedisParams,
    views: &[QueueView],
    seen: &mut HashMap<Key, (String, HashMap<String, PodInfo>)>,
    returned: &mut HashSet<String>,
    departed: &mut HashMap<String, Departed>,
) {
    let now = Instant::now();
    let mut now_seen: HashMap<Key, (String, HashMap<String, PodInfo>)> = HashMap::new();
    for v in views {
        for pod in &v.terminal {
            let info = v.info.get(pod).unwrap_or(&v.template);
            if !returned.contains(pod)
                && give_back(ctx, broker, params, &v.qw, &v.queue, pod, info).await
            {
                returned.insert(pod.clone());
            }
        }
        if let Some((queue, before)) = seen.get(&v.qw) {
            for pod in left_view(before.keys(), &v.present) {
                if !returned.contains(pod) {
                    departed.entry(pod.clone()).or_insert_with(|| Departed {
                        qw: v.qw.clone(),
                        queue: queue.clone(),
                        info: before.get(pod).cloned().unwrap_or(v.template.clone()),
                        check_at: now,
                        told: false,
                    });
                }
            }
        }
        now_seen.insert(v.qw.clone(), (v.queue.clone(), v.info.clone()));
    }
    let present: HashSet<&String> = views.iter().flat_map(|v| v.present.iter()).collect();
    // Back in a view (its label put back): the terminal rule above covers it again.
    departed.retain(|pod, _| !present.contains(pod));
    let mut due: Vec<String> = departed
        .iter()
        .filter(|(_, d)| d.check_at <= now)
        .map(|(pod, _)| pod.clone())
        .collect();
    due.sort();
    for pod in due {
        let Some(d) = departed.get(&pod).cloned() else {
            continue;
        };
        // The cache only says the pod is no longer this QWorker's; the API says whether it runs.
        match look_up(ctx, &d.qw.0, &pod).await {
            Ok(fate) if fate.may_return() => {
                if give_back(ctx, broker, params, &d.qw, &d.queue, &pod, &d.info).await {
                    departed.remove(&pod);
                }
            }
            Ok(_) => {
                if !d.told {
                    tracing::info!(namespace = %d.qw.0, qworker = %d.qw.1, pod, "pod left the QWorker but still runs: its in-flight tasks stay with it until it ends");
                }
                if let Some(e) = departed.get_mut(&pod) {
                    e.told = true;
                    e.check_at = now + SWEEP_EVERY;
                }
            }
            Err(e) => {
                tracing::warn!(namespace = %d.qw.0, pod, error = %e, "could not look up a pod that left its QWorker; will retry");
                if let Some(e) = departed.get_mut(&pod) {
                    e.check_at = now + Duration::from_secs(1);
                }
            }
        }
    }
    returned.retain(|p| present.contains(p));
    *seen = now_seen;
}

async fn sweep_orphans<B: Broker>(
    ctx: &Arc<Context>,
    broker: &mut B,
    params: &RedisParams,
    views: &[QueueView],
    pods: &[Arc<Pod>],
    candidates: &mut HashSet<(String, String)>,
) {
    let alive: HashSet<(&str, &str)> = pods
        .iter()
        .filter(|p| !is_terminal(p))
        .filter_map(|p| {
            Some((
                p.metadata.namespace.as_deref()?,
                p.metadata.name.as_deref()?,
            ))
        })
        .collect();
    let mut next = HashSet::new();
    for v in views {
        let owners = match broker.in_flight_owners(&v.queue, &v.qw.0).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(queue = %v.queue, error = %e, "sweep of in-flight lists failed");
                continue;
            }
        };
        for pod in owners {
            if !pod.starts_with(&v.prefix) || alive.contains(&(v.qw.0.as_str(), pod.as_str())) {
                continue;
            }
            let k = (v.queue.clone(), pod.clone());
            if !candidates.contains(&k) {
                next.insert(k);
                continue;
            }
            // Missing from the cache twice; the API decides (a pod without its label still runs).
            match look_up(ctx, &v.qw.0, &pod).await {
                Ok(fate) if fate.may_return() => {
                    give_back(ctx, broker, params, &v.qw, &v.queue, &pod, &v.template).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(namespace = %v.qw.0, pod, error = %e, "could not look up the owner of an in-flight list");
                    next.insert(k);
                }
            }
        }
    }
    *candidates = next;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: Option<&str>) -> Pod {
        Pod {
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: phase.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_gone_or_ended_pod_gives_its_tasks_back() {
        assert_eq!(Fate::of(None), Fate::Gone);
        assert_eq!(Fate::of(Some(&pod(Some("Succeeded")))), Fate::Ended);
        assert_eq!(Fate::of(Some(&pod(Some("Failed")))), Fate::Ended);
        for alive in [Some("Running"), Some("Pending"), Some("Unknown"), None] {
            assert_eq!(Fate::of(Some(&pod(alive))), Fate::Alive, "{alive:?}");
        }
        assert!(Fate::Gone.may_return() && Fate::Ended.may_return());
        assert!(!Fate::Alive.may_return());
    }

    #[test]
    fn pods_that_left_the_view() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<String>>();
        let before = set(&["a", "b", "c"]);
        assert_eq!(left_view(&before, &set(&["b", "d"])), vec!["a", "c"]);
        assert!(left_view(&before, &before).is_empty());
    }

    #[test]
    fn a_pods_retry_limit_is_its_supervisors() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w-1"},
            "spec": {"containers": [{"name": "w", "args": ["--task", "--max-retries", "1", "--", "x"]}]}
        }))
        .unwrap();
        assert_eq!(PodInfo::of(&pod).max_retries, 1);
        assert_eq!(
            PodInfo::of(&Pod::default()).max_retries,
            task::DEFAULT_MAX_RETRIES
        );
    }

    fn current() -> RedisParams {
        RedisParams {
            host: "redis".into(),
            port: 6379,
            db: 1,
            username: None,
            password: Some("pw".into()),
            tls: false,
            tls_insecure: false,
            tls_ca: None,
        }
    }

    fn pod_broker(host: &str, db: i64) -> PodBroker {
        PodBroker {
            host: host.into(),
            port: 6379,
            db,
            username: None,
            tls: false,
            tls_insecure: false,
            password: None,
            ca: None,
        }
    }

    #[test]
    fn a_dead_pods_tasks_go_back_where_it_took_them() {
        assert!(same_broker(&pod_broker("redis", 1), &current()));
        // The ScalerConfig moved to db 1; the pod consumed db 0.
        let old = pod_broker("redis", 0);
        assert!(!same_broker(&old, &current()));
        let p = params_for(&old, &current(), None, None);
        assert_eq!((p.host.as_str(), p.db), ("redis", 0));
        // Same server: its password (inline in the ScalerConfig, never in the pod) still applies.
        assert_eq!(p.password.as_deref(), Some("pw"));
        // Another server: only what the pod reads itself.
        let p = params_for(&pod_broker("elsewhere", 0), &current(), None, None);
        assert_eq!(p.password, None);
        let p = params_for(
            &pod_broker("elsewhere", 0),
            &current(),
            Some("theirs".into()),
            None,
        );
        assert_eq!(p.password.as_deref(), Some("theirs"));
    }

    #[test]
    fn triggers_on_desired_change_only_or_slow_depth_refresh() {
        let t0 = Instant::now();
        let d = |q| {
            Some(Depth {
                queued: q,
                in_flight: 0,
            })
        };
        assert!(should_trigger(None, Some(1), d(1), t0));
        let told = Told {
            desired: Some(1),
            depth: d(1),
            at: t0,
        };
        assert!(!should_trigger(
            Some(&told),
            Some(1),
            d(1),
            t0 + Duration::from_secs(60)
        ));
        assert!(!should_trigger(
            Some(&told),
            Some(1),
            d(2),
            t0 + Duration::from_secs(1)
        ));
        assert!(should_trigger(
            Some(&told),
            Some(1),
            d(2),
            t0 + STATUS_REFRESH
        ));
        assert!(should_trigger(
            Some(&told),
            Some(2),
            d(2),
            t0 + Duration::from_millis(1)
        ));
        assert!(should_trigger(
            Some(&told),
            None,
            None,
            t0 + Duration::from_millis(1)
        ));
    }
}
