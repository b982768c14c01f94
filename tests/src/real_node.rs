//! Attaching a test to the real node of `tests/node.sh`: kubelet + Docker + kube-proxy in a network
//! namespace, with the project's images built by `docker/build.sh`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::cluster::{workspace_root, Cluster};

/// What to do when the real node is not there.
pub const NODE_HINT: &str = "run tests/node.sh up, then eval \"$(tests/node.sh env)\" and \
     docker/build.sh --debug --test --tag e2e (tests/run.sh does all of it)";

/// The image tag the suite runs (`docker/build.sh --tag`); `QSCALER_IMAGE_TAG` overrides it.
pub fn image_tag() -> String {
    std::env::var("QSCALER_IMAGE_TAG")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "e2e".into())
}

/// `qscaler/<name>:<tag>`.
pub fn image(name: &str) -> String {
    format!("qscaler/{name}:{}", image_tag())
}

/// The real node's state directory (`QSCALER_NODE_DIR`, default `/tmp/qscaler-node`).
pub fn node_dir() -> PathBuf {
    std::env::var("QSCALER_NODE_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/qscaler-node"))
}

/// The real node's cluster, attached through the files `tests/node.sh up` wrote.
pub async fn connect() -> Cluster {
    let dir = node_dir();
    let redis_url = std::fs::read_to_string(dir.join("redis.url"))
        .unwrap_or_else(|e| panic!("{}/redis.url: {e}; {NODE_HINT}", dir.display()));
    Cluster::attach(
        dir.join("kubeconfig"),
        redis_url.trim().to_string(),
        dir,
        NODE_HINT,
    )
    .await
}

/// Host and port of the node's Redis as pods reach it (the namespace's address).
pub fn redis_host_port(cluster: &Cluster) -> (String, u16) {
    let rest = cluster
        .redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("REDIS URL without a port: {}", cluster.redis_url));
    (
        host.to_string(),
        port.parse()
            .unwrap_or_else(|e| panic!("bad Redis port in {}: {e}", cluster.redis_url)),
    )
}

/// Runs `install.sh` with the given arguments against the node; panics with its output on failure.
pub fn install_sh(cluster: &Cluster, args: &[&str]) -> String {
    let out = Command::new(workspace_root().join("install.sh"))
        .args(args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("running install.sh: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh {args:?} failed:\n{text}");
    text
}

/// Installs the operator from its image once per test process (every test of the suite shares it);
/// returns install.sh's output.
pub fn operator_installed(cluster: &Cluster) -> &'static str {
    static INSTALLED: OnceLock<String> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let tag = image_tag();
        install_sh(
            cluster,
            &[
                "--image",
                "qscaler/operator",
                "--tag",
                &tag,
                "--timeout",
                "180",
            ],
        )
    })
}

/// `kubectl logs` of a container (empty when it has none yet, or the pod is gone).
pub fn logs(cluster: &Cluster, ns: &str, pod: &str, container: &str) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["-n", ns, "logs", pod, "-c", container])
        .output()
        .unwrap_or_else(|e| panic!("running kubectl logs: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
