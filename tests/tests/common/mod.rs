//! Fixtures shared by the e2e test binaries that drive the whole loop (operator, soak): a test's own
//! namespace, RBAC, ScalerConfig and operator; its own redis-server; pod samples; task events.
#![allow(dead_code)] // each test binary uses a part

pub mod topologies;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use qscaler_crds::names;
use qscaler_crds::{QWorker, ScalerConfig};
use qscaler_tests::operator::Operator;
use qscaler_tests::tls::TestCa;
use qscaler_tests::{wait_for, Cluster};
use redis::AsyncCommands;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

pub const T: Duration = Duration::from_secs(60);

/// A redis-server of one test, on a free port, with its data kept across a stop and start.
pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// With [`OwnRedis::start_tls`]: the server speaks only TLS, with a certificate of this CA.
    tls: Option<TestCa>,
}

impl OwnRedis {
    /// Starts on a free port below the kernel's ephemeral range (32768+), where outgoing
    /// connections cannot hold it; when another process takes the port between the probe and
    /// redis-server's bind, tries the next candidate.
    pub async fn start() -> OwnRedis {
        Self::start_with(false).await
    }

    /// As [`OwnRedis::start`], but the server speaks only TLS (`--port 0 --tls-port P`, clients
    /// not asked for certificates), with a fresh CA and server certificate made for this server.
    pub async fn start_tls() -> OwnRedis {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> OwnRedis {
        let mut last_error = String::new();
        for attempt in 0..8u16 {
            let port = free_port_below_ephemeral(attempt);
            let dir =
                std::env::temp_dir().join(format!("qscaler-redis-{port}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("redis dir");
            let tls = tls.then(|| TestCa::make(&dir));
            let mut r = OwnRedis {
                port,
                dir,
                child: None,
                tls,
            };
            match r.try_resume().await {
                Ok(()) => return r,
                Err(e) => last_error = e,
            }
        }
        panic!("no own redis-server after 8 ports: {last_error}");
    }

    /// Starts redis-server again on the same port and data directory (after `stop`).
    pub async fn resume(&mut self) {
        if let Err(e) = self.try_resume().await {
            panic!(
                "own redis-server did not come back on port {}: {e}",
                self.port
            );
        }
    }

    /// Spawns redis-server and waits until the server answering on the port is this child (its
    /// `process_id`), or the child has exited (the port was taken).
    async fn try_resume(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some(t) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-auth-clients", "no", "--tls-cert-file"])
                .arg(&t.cert)
                .arg("--tls-key-file")
                .arg(&t.key)
                .arg("--tls-ca-cert-file")
                .arg(&t.ca),
        };
        let mut child = cmd
            .args(["--bind", "127.0.0.1", "--save", "3600 1"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let pid = child.id().expect("a running redis-server has a pid");
        let client = self.client();
        let deadline = Instant::now() + T;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                ));
            }
            if redis_process_id(&client).await == Some(pid) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {} never answered", self.port));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM: Redis saves its data and exits.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = c.wait().await;
        }
    }

    /// `redis://127.0.0.1:<port>/`, or `rediss://...` for a TLS server (whose clients also need
    /// the CA: use [`OwnRedis::client`]).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// The TLS set-up of a server started with [`OwnRedis::start_tls`].
    pub fn tls(&self) -> Option<&TestCa> {
        self.tls.as_ref()
    }

    /// A client of this server; over TLS it verifies the server with the test's CA.
    pub fn client(&self) -> redis::Client {
        match &self.tls {
            None => redis::Client::open(self.url()).expect("redis url"),
            Some(t) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(t.ca_pem.clone().into_bytes()),
                },
            )
            .expect("redis TLS client"),
        }
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("own redis connection")
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port in 20000..32768 that is free now: spread by the test process id and the attempt, so
/// parallel tests and test binaries start on different candidates.
fn free_port_below_ephemeral(attempt: u16) -> u16 {
    let seed = std::process::id() as u64 * 7919
        + u64::from(attempt) * 104_729
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::from(d.subsec_nanos()))
            .unwrap_or(0);
    (0..12_768u64)
        .map(|i| 20_000 + ((seed + i * 613) % 12_768) as u16)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port in 20000..32768")
}

/// The `process_id` of the redis-server `client` reaches, if one answers.
async fn redis_process_id(client: &redis::Client) -> Option<u32> {
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

pub fn redis_port(url: &str) -> u16 {
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// Lets worker pods (default ServiceAccount) watch and patch their own pod, as qsupervisor needs.
pub async fn worker_rbac(cluster: &Cluster, ns: &str) {
    cluster
        .grant_pods(ns, "qscaler-worker", &["get", "watch", "patch"])
        .await;
}

pub async fn scaler_config(cluster: &Cluster, ns: &str, port: u16) {
    scaler_config_with(cluster, ns, port, json!({})).await;
}

/// The ScalerConfig `redis` for `port`, with `config` merged into `spec.config` (e.g. `tls`).
pub async fn scaler_config_with(cluster: &Cluster, ns: &str, port: u16, config: Value) {
    let mut spec =
        json!({"type": "redis", "config": {"host": "127.0.0.1", "port": port.to_string()}});
    merge(&mut spec["config"], config);
    let sc: ScalerConfig = serde_json::from_value(json!({
        "apiVersion": "quickube.com/v1alpha1", "kind": "ScalerConfig",
        "metadata": {"name": "redis"},
        "spec": spec
    }))
    .expect("ScalerConfig");
    Api::<ScalerConfig>::namespaced(cluster.client.clone(), ns)
        .create(&PostParams::default(), &sc)
        .await
        .expect("creating ScalerConfig");
}

/// A QWorker of qsupervisor wrapping the test worker. `worker_args` go to qscaler-test-worker;
/// `scale` is merged into scaleConfig.
pub fn qworker(name: &str, queue: &str, worker_args: &[&str], scale: Value) -> Value {
    let mut args = vec!["--", "qscaler-test-worker"];
    args.extend_from_slice(worker_args);
    let mut sc = json!({"scalerConfigRef": "redis", "queue": queue, "minReplicas": 0, "maxReplicas": 5,
                        "scalingFactor": 1, "scaleDownStabilizationSeconds": 1});
    merge(&mut sc, scale);
    json!({
        "apiVersion": "quickube.com/v1alpha1", "kind": "QWorker",
        "metadata": {"name": name},
        "spec": {
            "podSpec": {"terminationGracePeriodSeconds": 30,
                        "containers": [{"name": "worker", "image": "qscaler/qsupervisor", "args": args}]},
            "scaleConfig": sc
        }
    })
}

/// A QWorker whose workers consume nothing (they idle until told to stop, then exit 0), so the queue
/// depth, and the desired count, stay exactly where the test puts them.
pub fn idle_qworker(name: &str, queue: &str, scale: Value) -> Value {
    let mut qw = qworker(name, queue, &[], scale);
    qw["spec"]["podSpec"]["containers"][0]["args"] = json!([
        "--",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.2; done"
    ]);
    qw
}

pub fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

pub async fn create_qworker(cluster: &Cluster, ns: &str, qw: Value) {
    let qw: QWorker = serde_json::from_value(qw).expect("QWorker");
    Api::<QWorker>::namespaced(cluster.client.clone(), ns)
        .create(&PostParams::default(), &qw)
        .await
        .expect("creating QWorker");
}

/// Deletes the test's namespace when the test ends, passed or not (its worker processes get
/// SIGTERM from the stand-in kubelet instead of polling Redis forever).
pub struct NamespaceGuard {
    pub kubeconfig: PathBuf,
    pub ns: String,
}

impl Drop for NamespaceGuard {
    /// Stops the namespace's operators, deletes the namespace without waiting, then lifts the
    /// operator's finalizers from what is in it: a test that is over needs no task returned. The
    /// operators go first because one still running would put its finalizer back on a QWorker the
    /// namespace controller has not marked yet, and the namespace would stay Terminating (the guard
    /// is usually dropped before the test's `Operator`).
    fn drop(&mut self) {
        stop_operators_of(&self.ns);
        delete_namespace(&self.kubeconfig, &self.ns, false);
    }
}

/// SIGKILLs every test operator that watches `ns` (restarted ones included), and waits for them.
fn stop_operators_of(ns: &str) {
    let pattern = format!("qscaler-operator .*--namespace {ns} ");
    let _ = std::process::Command::new("pkill")
        .args(["-KILL", "-f", "--", &pattern])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && std::process::Command::new("pgrep")
            .args(["-f", "--", &pattern])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes `ns` (waiting up to 60 s when `wait`, so a running operator can release its finalizers
/// itself), then lifts the finalizers of the QWorkers and ScalerConfigs still in it.
fn delete_namespace(kubeconfig: &Path, ns: &str, wait: bool) {
    let kubectl = |args: &[&str]| {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
    };
    let wait_args: &[&str] = if wait {
        &["--wait=true", "--timeout=60s"]
    } else {
        &["--wait=false"]
    };
    let _ = kubectl(&[&["delete", "namespace", ns][..], wait_args].concat());
    let Some(out) = kubectl(&["-n", ns, "get", "qworkers,scalerconfigs", "-o", "name"]) else {
        return;
    };
    for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = kubectl(&[
            "-n",
            ns,
            "patch",
            name,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
    }
}

/// A test's namespace with worker RBAC, a ScalerConfig for `port`, and its operator. Keep the guard
/// alive for the whole test.
pub async fn setup(
    prefix: &str,
    port: Option<u16>,
    operator_args: &[&str],
) -> (Cluster, String, Operator, NamespaceGuard) {
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace(prefix).await;
    let guard = NamespaceGuard {
        kubeconfig: cluster.kubeconfig.clone(),
        ns: ns.clone(),
    };
    worker_rbac(&cluster, &ns).await;
    scaler_config(
        &cluster,
        &ns,
        port.unwrap_or_else(|| redis_port(&cluster.redis_url)),
    )
    .await;
    let op = Operator::start(&cluster, &ns, operator_args).await;
    (cluster, ns, op, guard)
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

pub fn alive(p: &Pod) -> bool {
    !matches!(phase(p), "Succeeded" | "Failed")
}

pub fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

pub async fn worker_pods(cluster: &Cluster, ns: &str, qw: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{}={qw}", names::LABEL_QWORKER)))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Samples a QWorker's pods every 50 ms for the whole test: the most alive at once, and every pod
/// name ever seen.
#[derive(Default)]
pub struct Samples {
    pub max_alive: usize,
    pub names: BTreeSet<String>,
    pub samples: usize,
    /// Alive count at each sample, with the drain annotations seen (to check "held").
    pub history: Vec<(Instant, usize, usize)>,
}

pub fn sample(
    cluster: &Cluster,
    ns: &str,
    qw: &str,
) -> (Arc<Mutex<Samples>>, tokio::task::JoinHandle<()>) {
    let s = Arc::new(Mutex::new(Samples::default()));
    let (cluster, ns, qw, out) = (cluster.clone(), ns.to_string(), qw.to_string(), s.clone());
    let task = tokio::spawn(async move {
        loop {
            let pods = worker_pods(&cluster, &ns, &qw).await;
            {
                let mut s = out.lock().unwrap_or_else(|e| e.into_inner());
                let n = pods.iter().filter(|p| alive(p)).count();
                let draining = pods
                    .iter()
                    .filter(|p| alive(p) && annotation(p, names::ANNOTATION_DRAIN).is_some())
                    .count();
                s.max_alive = s.max_alive.max(n);
                s.samples += 1;
                s.history.push((Instant::now(), n, draining));
                for p in &pods {
                    if let Some(n) = &p.metadata.name {
                        s.names.insert(n.clone());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (s, task)
}

pub async fn get_qworker(cluster: &Cluster, ns: &str, name: &str) -> QWorker {
    Api::<QWorker>::namespaced(cluster.client.clone(), ns)
        .get(name)
        .await
        .expect("get QWorker")
}

/// The pod-spec hash the operator last wrote to the QWorker's status.
pub async fn current_hash(cluster: &Cluster, ns: &str, name: &str) -> String {
    get_qworker(cluster, ns, name)
        .await
        .status
        .expect("status")
        .current_pod_spec_hash
}

/// Replaces the QWorker's pod template (a rollout) and waits until the operator's status names a
/// hash other than `old_hash`; returns it.
pub async fn roll_out(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    pod_spec: Value,
    old_hash: &str,
) -> String {
    Api::<QWorker>::namespaced(cluster.client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"podSpec": pod_spec}})),
        )
        .await
        .expect("patching the pod template");
    wait_for("a new currentPodSpecHash", T, || async {
        let h = get_qworker(cluster, ns, name)
            .await
            .status?
            .current_pod_spec_hash;
        (h != old_hash).then_some(h)
    })
    .await
}

pub fn condition<'a>(qw: &'a QWorker, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    qw.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

/// The task events the workers wrote: start/end per task id.
pub async fn task_events(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let lines: Vec<String> = conn
        .lrange(format!("{queue}:events"), 0, -1)
        .await
        .expect("LRANGE events");
    let mut starts = BTreeMap::new();
    let mut ends = BTreeMap::new();
    for l in lines {
        let mut parts = l.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("start"), Some(id)) => *starts.entry(id.to_string()).or_insert(0) += 1,
            (Some("end"), Some(id)) => *ends.entry(id.to_string()).or_insert(0) += 1,
            _ => {}
        }
    }
    (starts, ends)
}

/// Events (events.k8s.io/v1, else core/v1) about `name` with `reason`.
/// The notes of the events.k8s.io Events with `reason` about QWorker `name`, each with how many
/// times it was published (a repeat the recorder folded into its series counts more than once).
pub async fn events_with_counts(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    reason: &str,
) -> Vec<(String, i32)> {
    let list = Api::<Event>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing Events");
    list.items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .map(|e| {
            let count = e.series.as_ref().map_or(1, |s| s.count);
            (e.note.unwrap_or_default(), count)
        })
        .collect()
}

pub async fn events_with_reason(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    reason: &str,
) -> Vec<String> {
    let mut notes = vec![];
    if let Ok(list) = Api::<Event>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        for e in list.items {
            if e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            {
                notes.push(e.note.unwrap_or_default());
            }
        }
    }
    if notes.is_empty() {
        if let Ok(list) = Api::<CoreEvent>::namespaced(cluster.client.clone(), ns)
            .list(&ListParams::default())
            .await
        {
            for e in list.items {
                if e.reason.as_deref() == Some(reason)
                    && e.involved_object.name.as_deref() == Some(name)
                {
                    notes.push(e.message.unwrap_or_default());
                }
            }
        }
    }
    notes
}

pub async fn push_tasks(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    ids: impl Iterator<Item = usize>,
) {
    let items: Vec<String> = ids.map(|i| format!("t{i}")).collect();
    let _: () = conn.lpush(queue, items).await.expect("LPUSH tasks");
}

pub fn assert_no_interrupted_task(
    starts: &BTreeMap<String, usize>,
    ends: &BTreeMap<String, usize>,
    op: &Operator,
) {
    let unfinished: Vec<&String> = starts.keys().filter(|id| !ends.contains_key(*id)).collect();
    assert!(
        unfinished.is_empty(),
        "tasks started and never finished: {unfinished:?}\noperator log:\n{}",
        op.log()
    );
}

/// Deletes a test's namespace while its operator still runs, and waits (up to 60 s) until it is
/// gone: the QWorkers' and ScalerConfigs' finalizers (`quickube.com/return-tasks`) are released by
/// the operator, as in a real cluster. Whatever is left after that has its finalizers stripped, so
/// the namespace never stays Terminating. Declare it after [`setup`]'s bindings: it must be dropped
/// before the operator.
pub struct DeleteNamespaceFirst {
    pub kubeconfig: PathBuf,
    pub ns: String,
}

impl DeleteNamespaceFirst {
    pub fn new(cluster: &Cluster, ns: &str) -> DeleteNamespaceFirst {
        DeleteNamespaceFirst {
            kubeconfig: cluster.kubeconfig.clone(),
            ns: ns.to_string(),
        }
    }
}

impl Drop for DeleteNamespaceFirst {
    fn drop(&mut self) {
        delete_namespace(&self.kubeconfig, &self.ns, true);
    }
}
