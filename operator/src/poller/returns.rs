//! Giving a dead pod's in-flight tasks back: on the poller's own broker, or, when the pod consumed
//! from another one (the ScalerConfig changed since), on that broker in a task of its own. Also the
//! QWorker deletion's path ([`return_now`]). Each returned task counts as a failed run; past the
//! pod's retry limit it is dead-lettered (see the poller's module doc).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use qscaler_crds::names::keys;
use qscaler_crds::scalerconfig::SecretKeyRef;
use qscaler_crds::worker_pod::WorkerPod;
use qscaler_crds::{task, QWorker};

use crate::broker::{Broker, BrokerError, Returned};
use crate::metrics::Metrics;
use crate::object_key::ObjectKey;
use crate::pods::{broker_of, PodBroker};
use crate::redis_broker::{RedisBroker, RedisParams};

/// What returning needs: the API (secrets, pod look-ups), the metrics, the broker timeout.
#[derive(Clone)]
pub(crate) struct Returner {
    pub client: Client,
    pub metrics: std::sync::Arc<Metrics>,
    pub broker_timeout: Duration,
}

/// What the API says of a pod whose tasks might be returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// No such pod (404): no process of it can still hold a task.
    Gone,
    /// Succeeded or Failed: its containers have stopped.
    Ended,
    /// Still Pending/Running/Unknown, whatever its labels and owners say now.
    Alive,
}

impl Fate {
    /// From a GET of the pod (`None`: 404).
    pub(crate) fn of(pod: Option<&Pod>) -> Fate {
        match pod {
            None => Fate::Gone,
            Some(p) if WorkerPod::read(p).phase.is_terminal() => Fate::Ended,
            Some(_) => Fate::Alive,
        }
    }

    /// Whether the pod's processing list may go back to the queue: only when nothing of it runs.
    pub(crate) fn may_return(self) -> bool {
        self != Fate::Alive
    }
}

/// What the poller keeps of a pod to return its tasks once it is gone.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PodInfo {
    /// The supervisor's retry limit in this pod: a task whose pod died more often than this is
    /// dead-lettered instead of returned.
    pub max_retries: u32,
    /// The broker the pod consumes from (its env), where its processing list is; `None`: the
    /// ScalerConfig's current one.
    pub broker: Option<PodBroker>,
}

impl PodInfo {
    pub(crate) fn of(pod: &Pod) -> PodInfo {
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
    pub(crate) fn of_template(qw: &QWorker) -> PodInfo {
        PodInfo {
            max_retries: task::max_retries(&qw.spec.pod_spec),
            broker: None,
        }
    }
}

/// Whether `pod` consumes from the broker `params` reach (the poller's own connection serves it).
pub(crate) fn same_broker(pod: &PodBroker, params: &RedisParams) -> bool {
    pod.host == params.host
        && pod.port == params.port
        && pod.db == params.db
        && pod.tls == params.tls
        && pod.username == params.username
}

/// The settings that reach a pod's broker, with the secrets the pod reads (resolved by the
/// caller). On the same server as the current settings (a db switch), a password or CA the pod
/// does not read from a Secret is the current one (an inline password is never in a pod).
pub(crate) fn params_for(
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
        // A pod names one server only (a Sentinel or Cluster pod is served by the poller's own).
        topology: qscaler_queue::Topology::Single,
    }
}

/// The bytes of a Secret key the pod reads (in its namespace); `None`, logged, when unreadable.
async fn secret(client: &Client, ns: &str, r: &SecretKeyRef) -> Option<Vec<u8>> {
    let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), ns);
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

/// One GET of `pod`: what became of it.
pub(crate) async fn look_up(client: &Client, ns: &str, pod: &str) -> kube::Result<Fate> {
    let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), ns);
    Ok(Fate::of(api.get_opt(pod).await?.as_ref()))
}

/// Returns a dead pod's processing list (see the module doc); false when it must be tried again.
/// A list in another broker than the poller's (the ScalerConfig changed since the pod was
/// created) is returned by a task of its own, so an old broker that is slow or gone never stalls
/// the poller: it retries with backoff for [`ELSEWHERE_FOR`], then says what it left behind.
pub(crate) async fn give_back<B: Broker>(
    ret: &Returner,
    broker: &mut B,
    params: &RedisParams,
    qw: &ObjectKey,
    queue: &str,
    pod: &str,
    info: &PodInfo,
) -> bool {
    if let Some(b) = info.broker.as_ref().filter(|b| !same_broker(b, params)) {
        tokio::spawn(return_elsewhere(
            ret.clone(),
            b.clone(),
            params.clone(),
            qw.clone(),
            queue.to_string(),
            pod.to_string(),
            info.max_retries,
        ));
        return true;
    }
    let consumer = keys::consumer(Some(&qw.namespace), pod);
    match broker
        .return_in_flight(queue, &consumer, info.max_retries)
        .await
    {
        Ok(r) => {
            report_returned(ret, qw, queue, pod, info.max_retries, r);
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
    ret: Returner,
    pod_broker: PodBroker,
    current: RedisParams,
    qw: ObjectKey,
    queue: String,
    pod: String,
    max_retries: u32,
) {
    let consumer = keys::consumer(Some(&qw.namespace), &pod);
    let started = Instant::now();
    let mut delay = Duration::from_secs(1);
    loop {
        let password = match &pod_broker.password {
            Some(r) => secret(&ret.client, &qw.namespace, r).await.map(|v| {
                String::from_utf8_lossy(&v)
                    .trim_end_matches('\n')
                    .to_string()
            }),
            None => None,
        };
        let ca = match &pod_broker.ca {
            Some(r) => secret(&ret.client, &qw.namespace, r).await,
            None => None,
        };
        let theirs = params_for(&pod_broker, &current, password, ca);
        let url = theirs.display_url();
        tracing::info!(namespace = %qw.namespace, qworker = %qw.name, pod, broker = %url, current = %current.display_url(), "returning a dead pod's tasks on the broker it used, not the ScalerConfig's current one");
        match RedisBroker::new(theirs, ret.broker_timeout)
            .return_in_flight(&queue, &consumer, max_retries)
            .await
        {
            Ok(r) => {
                report_returned(&ret, &qw, &queue, &pod, max_retries, r);
                return;
            }
            Err(e) if started.elapsed() + delay > ELSEWHERE_FOR => {
                tracing::error!(namespace = %qw.namespace, qworker = %qw.name, pod, broker = %url, list = %keys::processing(&queue, &consumer), error = %e, "gave up returning a dead pod's tasks: they are still in its list on that broker");
                return;
            }
            Err(e) => {
                tracing::warn!(namespace = %qw.namespace, pod, broker = %url, error = %e, retry_in = ?delay, "could not return a dead pod's tasks on the broker it used; will retry");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// The settings that reach the broker `info` says a pod consumed from: the ScalerConfig's current
/// ones (its poller's) when they are the same broker, else the pod's own with the secrets it reads.
/// `None` when neither is known (no ScalerConfig and a pod without broker env: nothing to return).
pub(crate) async fn params_of_pod(
    ret: &Returner,
    ns: &str,
    current: Option<&RedisParams>,
    info: &PodInfo,
) -> Option<RedisParams> {
    match (&info.broker, current) {
        (Some(b), Some(c)) if same_broker(b, c) => Some(c.clone()),
        (Some(b), current) => {
            let password = match &b.password {
                Some(r) => secret(&ret.client, ns, r).await.map(|v| {
                    String::from_utf8_lossy(&v)
                        .trim_end_matches('\n')
                        .to_string()
                }),
                None => None,
            };
            let ca = match &b.ca {
                Some(r) => secret(&ret.client, ns, r).await,
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
                topology: qscaler_queue::Topology::Single,
            };
            Some(params_for(b, current.unwrap_or(&own), password, ca))
        }
        (None, Some(c)) => Some(c.clone()),
        (None, None) => None,
    }
}

/// Returns `pod`'s processing list now, on the broker it consumed from (the QWorker deletion's
/// path; the same atomic, retry-counting return as the poller's). `Ok(None)`: no broker known.
pub(crate) async fn return_now(
    ret: &Returner,
    qw: &ObjectKey,
    current: Option<&RedisParams>,
    queue: &str,
    pod: &str,
    info: &PodInfo,
) -> Result<Option<Returned>, BrokerError> {
    let Some(params) = params_of_pod(ret, &qw.namespace, current, info).await else {
        return Ok(None);
    };
    let consumer = keys::consumer(Some(&qw.namespace), pod);
    let r = RedisBroker::new(params, ret.broker_timeout)
        .return_in_flight(queue, &consumer, info.max_retries)
        .await?;
    report_returned(ret, qw, queue, pod, info.max_retries, r);
    Ok(Some(r))
}

/// The pods of `ns` holding a processing list of `queue` on broker `params`.
pub(crate) async fn list_owners(
    ret: &Returner,
    params: RedisParams,
    queue: &str,
    ns: &str,
) -> Result<Vec<String>, BrokerError> {
    RedisBroker::new(params, ret.broker_timeout)
        .in_flight_owners(queue, ns)
        .await
}

/// Logs and counts what a return did.
pub(crate) fn report_returned(
    ret: &Returner,
    qw: &ObjectKey,
    queue: &str,
    pod: &str,
    max_retries: u32,
    r: Returned,
) {
    let labels = [
        ("namespace", qw.namespace.as_str()),
        ("qworker", qw.name.as_str()),
    ];
    if r.requeued > 0 {
        tracing::info!(namespace = %qw.namespace, qworker = %qw.name, pod, tasks = r.requeued, "returned in-flight tasks of a dead pod to the queue (each counted as a retry)");
        ret.metrics
            .inc("qscaler_tasks_returned_total", &labels, r.requeued as f64);
    }
    if r.dead_lettered > 0 {
        tracing::warn!(namespace = %qw.namespace, qworker = %qw.name, pod, tasks = r.dead_lettered, max_retries, dead_letter = %keys::dead_letter(queue), "tasks whose pods kept dying moved to the dead-letter list");
        ret.metrics.inc(
            "qscaler_tasks_dead_lettered_total",
            &labels,
            r.dead_lettered as f64,
        );
    }
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
            topology: Default::default(),
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

    fn returner() -> Returner {
        // Never contacted: returns on the poller's own broker touch only the broker and metrics.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        Returner {
            client: Client::try_from(config).unwrap(),
            metrics: std::sync::Arc::new(Metrics::default()),
            broker_timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn a_returned_task_counts_a_retry_and_is_dead_lettered_past_the_limit() {
        use crate::fake_broker::FakeBroker;
        let qw = ObjectKey::new("ns", "w");
        let list = keys::processing("q", &keys::consumer(Some("ns"), "w-1"));
        let mut broker = FakeBroker::default();
        broker
            .lists
            .insert(list.clone(), vec!["a".into(), "b".into()]);
        broker.retries.insert("b".into(), 1);
        let info = PodInfo {
            max_retries: 1,
            broker: None,
        };
        let ret = returner();
        assert!(give_back(&ret, &mut broker, &current(), &qw, "q", "w-1", &info).await);
        assert_eq!(broker.lists.get("q"), Some(&vec!["a".to_string()]));
        assert_eq!(broker.lists.get("{q}:dead"), Some(&vec!["b".to_string()]));
        assert!(!broker.lists.contains_key(&list));
        broker.down = true;
        assert!(
            !give_back(&ret, &mut broker, &current(), &qw, "q", "w-1", &info).await,
            "an unreachable broker: tried again later"
        );
    }
}
