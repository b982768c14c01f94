//! qsupervisor never gives up on the Kubernetes API. On a real node it once failed its first call
//! (a certificate without the Service IP), became a plain init for life and ignored a drain. Here
//! the API is unreachable when it starts (a proxy in this test refuses connections) and reachable
//! later, through the same address: in task mode it takes no task meanwhile, then connects, takes
//! tasks, rides out a second outage that cuts its pod watch, and on the drain annotation finishes
//! the current task and exits 0.
//!
//! qsupervisor runs as a child process of the test, not under the stand-in kubelet: its pod is a
//! real Pod object bound to a Node object of its own that no kubelet serves, so nothing else runs it.
//!
//! Needs the local cluster: `tests/cluster.sh up && eval "$(tests/cluster.sh env)"`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::{Api, ResourceExt};
use qscaler_crds::names::{keys, ANNOTATION_ACTIVITY, ANNOTATION_DRAIN};
use qscaler_crds::usage::annotation_key;
use qscaler_tests::{wait_for, workspace_bin, Cluster};
use redis::AsyncCommands;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

const T: Duration = Duration::from_secs(60);
/// How long the API stays unreachable after qsupervisor starts (at least).
const CLOSED_FOR: Duration = Duration::from_secs(4);
/// qsupervisor's warning for each failed attempt to reach its pod.
const API_FAILURE: &str = "Kubernetes API not usable yet";
const TASKS: [&str; 3] = ["a", "b", "c"];

/// Deletes what the test made outside its namespace, and the namespace, even when it fails. The pod
/// goes with grace 0: no kubelet would ever confirm its end. Tasks still waiting for their file (a
/// failed run kills qsupervisor, not its task) are let go.
struct Cleanup {
    kubeconfig: PathBuf,
    ns: String,
    node: String,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for t in TASKS {
            let _ = std::fs::write(self.dir.join(format!("go-{t}")), "");
        }
        let kubectl = |args: &[&str]| {
            let _ = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        kubectl(&[
            "delete",
            "pod",
            "w",
            "-n",
            &self.ns,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ]);
        kubectl(&["delete", "node", &self.node, "--wait=false"]);
        kubectl(&["delete", "namespace", &self.ns, "--wait=false"]);
    }
}

/// A free loopback port below the ephemeral range (32768+), so that no outgoing connection takes
/// it while the proxy is closed.
fn port_below_ephemeral() -> u16 {
    let seed = u64::from(std::process::id()) * 7919
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::from(d.subsec_nanos()))
            .unwrap_or(0);
    (0..12_768u64)
        .map(|i| 20_000 + ((seed + i * 613) % 12_768) as u16)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port in 20000..32768")
}

/// A TCP proxy on `port` to `upstream`, open while `open` says so. Closed, nothing listens
/// (connections are refused) and the connections it carried are cut. TLS passes through untouched,
/// and the apiserver's certificate names 127.0.0.1, so it verifies through the proxy's port too.
fn proxy(
    port: u16,
    upstream: String,
    mut open: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while open.wait_for(|o| *o).await.is_ok() {
            let listener = TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap_or_else(|e| panic!("proxy: binding 127.0.0.1:{port}: {e}"));
            // Dropped when closing: that aborts every forwarding task, closing its sockets.
            let mut carried = JoinSet::new();
            loop {
                tokio::select! {
                    _ = open.wait_for(|o| !*o) => break,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        let upstream = upstream.clone();
                        carried.spawn(async move {
                            if let Ok(mut out) = TcpStream::connect(&upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                            }
                        });
                    }
                }
            }
        }
    })
}

/// The apiserver's `host:port` and CA file, from the cluster's kubeconfig.
fn apiserver(c: &Cluster) -> (String, String) {
    let kc = Kubeconfig::read_from(&c.kubeconfig).expect("the cluster's kubeconfig");
    let cluster = kc.clusters[0].cluster.as_ref().expect("a cluster entry");
    let server = cluster.server.clone().expect("a server URL");
    let addr = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let ca = cluster
        .certificate_authority
        .clone()
        .expect("the CA file of the cluster");
    (addr, ca)
}

/// The token of the namespace's `default` ServiceAccount (on 1.20, from its token Secret).
async fn service_account_token(c: &Cluster, ns: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(c.client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), ns);
    wait_for("the default ServiceAccount's token", T, || {
        let (sas, secrets) = (sas.clone(), secrets.clone());
        async move {
            let sa = sas.get("default").await.ok()?;
            let name = sa.secrets?.first()?.name.clone()?;
            let secret = secrets.get(&name).await.ok()?;
            let token = secret.data?.get("token")?.0.clone();
            String::from_utf8(token).ok()
        }
    })
    .await
}

fn write_kubeconfig(path: &Path, server: &str, ca: &str, token: &str) {
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "via-proxy", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "worker", "user": {"token": token}}],
        "contexts": [{"name": "worker", "context": {"cluster": "via-proxy", "user": "worker"}}],
        "current-context": "worker",
    });
    std::fs::write(path, kc.to_string()).expect("writing the kubeconfig");
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_mode_waits_for_the_api_then_takes_tasks_and_drains() {
    let c = Cluster::connect().await;
    let ns = c.namespace("sup-api").await;
    let node = format!("{ns}-nowhere");
    let dir = std::env::temp_dir().join(format!("qscaler-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup {
        kubeconfig: c.kubeconfig.clone(),
        ns: ns.clone(),
        node: node.clone(),
        dir: dir.clone(),
    };
    c.grant_pods(&ns, "qsupervisor", &["get", "watch", "patch"])
        .await;

    // Its pod: bound to a Node no kubelet serves (a Node object, so the pod GC leaves the pod be).
    let node_obj: Node = serde_json::from_value(json!({"metadata": {"name": node}})).unwrap();
    Api::<Node>::all(c.client.clone())
        .create(&PostParams::default(), &node_obj)
        .await
        .unwrap_or_else(|e| panic!("creating node {node}: {e}"));
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "w"},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "qscaler/qsupervisor"}]},
    }))
    .unwrap();
    c.pods(&ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("creating pod {ns}/w: {e}"));

    // Three tasks; each runs until the test lets it end (a file named after it).
    let queue = format!("{ns}:tasks");
    let processing = keys::processing(&queue, &keys::consumer(Some(&ns), "w"));
    let mut r = c.redis().await;
    for t in TASKS {
        let _: () = r.lpush(&queue, t).await.unwrap();
    }
    let (out, log) = (dir.join("out"), dir.join("qsupervisor.log"));
    // A task gives up waiting after 60 s, so that nothing outlives a broken run for long.
    let script = format!(
        "p=$(cat); echo \"start $p\" >> {o}; n=0; \
         while [ ! -e {d}/go-$p ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done; \
         echo \"end $p\" >> {o}",
        o = out.display(),
        d = dir.display()
    );

    // qsupervisor reaches the API only through the proxy, with the worker's ServiceAccount token.
    let (upstream, ca) = apiserver(&c);
    let port = port_below_ephemeral();
    let token = service_account_token(&c, &ns).await;
    let kubeconfig = dir.join("kubeconfig");
    write_kubeconfig(
        &kubeconfig,
        &format!("https://127.0.0.1:{port}"),
        &ca,
        &token,
    );
    let (open, open_rx) = watch::channel(false);
    let proxy = proxy(port, upstream, open_rx);

    let started = Instant::now();
    // QSCALER_TEST_QSUPERVISOR runs another build (e.g. an older one, to see this test fail).
    let bin = std::env::var_os("QSCALER_TEST_QSUPERVISOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_bin("qsupervisor"));
    let mut sup = tokio::process::Command::new(bin)
        .args(["--task", "--redis-url", &c.redis_url, "--queue", &queue])
        .args(["--sample-interval", "1s", "--report-interval", "1s"])
        .args(["--", "sh", "-c", &script])
        .env("POD_NAME", "w")
        .env("POD_NAMESPACE", &ns)
        .env("QSCALER_CONTAINER_NAME", "main")
        .env("KUBECONFIG", &kubeconfig)
        // Its default log filter, as in a worker pod.
        .env_remove("RUST_LOG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning qsupervisor");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Unreachable: it keeps trying, and takes no task (checked on every poll).
    wait_for(
        "at least two failed attempts and the closed phase over",
        T,
        || {
            let (mut r, queue, processing) = (r.clone(), queue.clone(), processing.clone());
            let (text, outs) = (read_log(), lines(&out));
            async move {
                let queued: usize = r.llen(&queue).await.unwrap();
                let taken: usize = r.llen(&processing).await.unwrap();
                assert!(
                    queued == 3 && taken == 0 && outs.is_empty(),
                    "a task was taken while the API was unreachable: queue {queued}, \
                     processing {taken}, ran {outs:?}\n{text}"
                );
                let failures = text.matches(API_FAILURE).count();
                (started.elapsed() >= CLOSED_FOR && failures >= 2).then_some(())
            }
        },
    )
    .await;
    assert!(
        sup.try_wait().unwrap().is_none(),
        "qsupervisor exited:\n{}",
        read_log()
    );

    // Reachable: it connects and takes tasks, one at a time.
    open.send_replace(true);
    let watching = format!("watching pod {ns}/w");
    wait_for("qsupervisor to watch its pod", T, || {
        let (text, watching) = (read_log(), &watching);
        async move { text.contains(watching.as_str()).then_some(()) }
    })
    .await;
    wait_for("task a to start", T, || {
        let o = lines(&out);
        async move { (o == ["start a"]).then_some(()) }
    })
    .await;
    // Usage, logged while the API was away, now goes to the pod (not only at exit).
    c.wait_pod(&ns, "w", "a usage report", T, |p| {
        p.annotations().contains_key(&annotation_key("main"))
    })
    .await;
    std::fs::write(dir.join("go-a"), "").unwrap();
    wait_for("task b to start after a ended", T, || {
        let o = lines(&out);
        async move { (o == ["start a", "end a", "start b"]).then_some(()) }
    })
    .await;

    // The API goes away again while b runs, cutting the pod watch: it keeps trying, and comes back.
    open.send_replace(false);
    wait_for(
        "the cut watch to be noticed and the pod to be unreadable",
        T,
        || {
            let text = read_log();
            async move { text.contains("reading our pod: ").then_some(()) }
        },
    )
    .await;
    open.send_replace(true);
    wait_for("qsupervisor to read its pod again", T, || {
        let text = read_log();
        async move { text.contains("our pod is reachable again").then_some(()) }
    })
    .await;

    // Drain while b runs: b finishes, c is not taken, the supervisor exits 0.
    let patch = json!({"metadata": {"annotations": {ANNOTATION_DRAIN: "scale-down"}}});
    c.pods(&ns)
        .patch("w", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for("qsupervisor to see the drain", T, || {
        let text = read_log();
        async move { text.contains("drain requested").then_some(()) }
    })
    .await;
    std::fs::write(dir.join("go-b"), "").unwrap();
    let status = tokio::time::timeout(T, sup.wait())
        .await
        .unwrap_or_else(|_| panic!("qsupervisor did not exit after the drain:\n{}", read_log()))
        .unwrap();
    let text = read_log();
    assert_eq!(status.code(), Some(0), "{text}");
    assert_eq!(
        lines(&out),
        ["start a", "end a", "start b", "end b"],
        "{text}"
    );
    let left: Vec<String> = r.lrange(&queue, 0, -1).await.unwrap();
    assert_eq!(left, ["c"], "{text}");
    let taken: usize = r.llen(&processing).await.unwrap();
    assert_eq!(taken, 0, "{text}");

    // The outage was logged as warnings with the next delay, not as errors.
    assert!(text.contains("; retrying in "), "{text}");
    assert!(!text.contains("ERROR"), "{text}");

    // Usage went to the log while the API was away; the activity was mirrored once it was reached.
    let first_usage = text.find(" usage=").expect("a usage line in the log");
    let connected = text.find("watching pod").expect("connected");
    assert!(first_usage < connected, "{text}");
    let pod = c.pods(&ns).get("w").await.unwrap();
    assert!(
        pod.annotations().contains_key(ANNOTATION_ACTIVITY),
        "{:?}",
        pod.annotations()
    );

    proxy.abort();
    let _: () = r.del(&[&queue]).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
