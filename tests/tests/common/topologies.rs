//! The Redis Cluster and Sentinel of `tests/redis-topologies.sh`, for the suites that use them
//! (topology_e2e, soak_e2e): their addresses, connections as the operator makes them, and the
//! Sentinel fault (SIGKILL the primary, wait for the promotion, revive it as a replica).

use std::time::Duration;

use kube::api::PostParams;
use kube::Api;
use qscaler_crds::ScalerConfig;
use qscaler_queue::{Conn, Connector, Node, RedisParams, SentinelParams, Timeouts, Topology};
use qscaler_tests::{wait_for, Cluster};
use serde_json::{json, Value};

/// The topologies' addresses, from `tests/redis-topologies.sh env`.
pub struct Topologies {
    pub cluster: Vec<String>,
    pub sentinels: Vec<String>,
    pub master: String,
    pub dir: std::path::PathBuf,
}

impl Topologies {
    /// `None` (the test says so and passes) when the topologies are not up, unless
    /// `QSCALER_REQUIRE_CLUSTER` says they must be (tests/run.sh).
    pub fn from_env() -> Option<Topologies> {
        const HINT: &str =
            "tests/redis-topologies.sh up && eval \"$(tests/redis-topologies.sh env)\"";
        let Ok(dir) = std::env::var("QSCALER_TOPOLOGIES_DIR") else {
            let required = std::env::var(qscaler_tests::cluster::REQUIRE_CLUSTER_ENV)
                .is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(!required, "QSCALER_TOPOLOGIES_DIR is not set: {HINT}");
            eprintln!("skipped: no Redis Cluster / Sentinel topologies ({HINT})");
            return None;
        };
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {HINT}"))
        };
        let list = |s: String| s.split(',').map(str::to_owned).collect::<Vec<_>>();
        Some(Topologies {
            cluster: list(var("QSCALER_TEST_CLUSTER_NODES")),
            sentinels: list(var("QSCALER_TEST_SENTINELS")),
            master: var("QSCALER_TEST_SENTINEL_MASTER"),
            dir: dir.into(),
        })
    }

    fn params(&self, topology: Topology) -> RedisParams {
        RedisParams {
            host: String::new(),
            port: 0,
            db: 0,
            username: None,
            password: None,
            tls: false,
            tls_insecure: false,
            tls_ca: None,
            topology,
        }
    }

    pub fn cluster_params(&self) -> RedisParams {
        let nodes = Node::parse_list(&self.cluster.join(",")).expect("cluster nodes");
        self.params(Topology::Cluster(nodes))
    }

    pub fn sentinel_params(&self) -> RedisParams {
        self.params(Topology::Sentinel(SentinelParams {
            nodes: Node::parse_list(&self.sentinels.join(",")).expect("sentinels"),
            master: self.master.clone(),
            username: None,
            password: None,
            tls: false,
            tls_insecure: false,
            tls_ca: None,
        }))
    }
}

pub async fn connect(params: &RedisParams) -> Option<Conn> {
    let t = Timeouts {
        connect: Duration::from_secs(2),
        response: Duration::from_secs(2),
    };
    Connector::new(params)
        .expect("connector")
        .connect(t)
        .await
        .ok()
}

/// A plain connection to one node.
pub async fn node(addr: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}/"))
        .expect("node url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

/// The ScalerConfig `name` with `config` as its whole `spec.config`.
pub async fn scaler_config_of(cluster: &Cluster, ns: &str, name: &str, config: Value) {
    let sc: ScalerConfig = serde_json::from_value(json!({
        "apiVersion": "quickube.com/v1alpha1", "kind": "ScalerConfig",
        "metadata": {"name": name},
        "spec": {"type": "redis", "config": config}
    }))
    .expect("ScalerConfig");
    Api::<ScalerConfig>::namespaced(cluster.client.clone(), ns)
        .create(&PostParams::default(), &sc)
        .await
        .expect("creating ScalerConfig");
}

/// Restarts a killed Sentinel data node as a replica when the test ends, passed or not.
pub struct Revive;

impl Drop for Revive {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/redis-topologies.sh");
        let _ = std::process::Command::new(script).arg("revive").status();
    }
}

/// The pid file of the Sentinel data node on `port`.
pub fn data_node_pid(dir: &std::path::Path, port: u16) -> i32 {
    for name in ["sentinel-data-1", "sentinel-data-2"] {
        let p = std::fs::read_to_string(dir.join(format!("{name}.port"))).unwrap_or_default();
        if p.trim() == port.to_string() {
            let pid = std::fs::read_to_string(dir.join(format!("{name}.pid"))).expect("pid file");
            return pid.trim().parse().expect("a pid");
        }
    }
    panic!("no Sentinel data node on port {port}");
}

impl Topologies {
    /// `spec.config` of a ScalerConfig on the Sentinel group.
    pub fn sentinel_config(&self) -> Value {
        json!({"sentinel": {"nodes": self.sentinels, "masterName": self.master}})
    }

    /// `spec.config` of a ScalerConfig on the Cluster.
    pub fn cluster_config(&self) -> Value {
        json!({"cluster": {"nodes": self.cluster}})
    }

    /// The port of the primary the sentinels name now.
    pub async fn primary_port(&self) -> Option<u16> {
        let mut s = node(&self.sentinels[0]).await;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master)
            .query_async(&mut s)
            .await
            .ok()?;
        Some(port)
    }

    /// SIGKILLs the Sentinel primary and waits until the sentinels name another; returns the
    /// killed and the promoted port. Keep a [`Revive`] alive to restart the killed one.
    pub async fn kill_primary(&self) -> (u16, u16) {
        let port = self.primary_port().await.expect("the primary's address");
        let pid = data_node_pid(&self.dir, port);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("SIGKILL the primary");
        let promoted = wait_for(
            "the sentinels to promote the replica",
            Duration::from_secs(60),
            || async { self.primary_port().await.filter(|p| *p != port) },
        )
        .await;
        (port, promoted)
    }
}

impl Topologies {
    /// `SENTINEL FAILOVER`: the replica is promoted while the primary lives on, demoted to a
    /// replica. Returns the demoted and the promoted port once the sentinels name the new one.
    pub async fn fail_over(&self) -> (u16, u16) {
        let port = self.primary_port().await.expect("the primary's address");
        let mut s = node(&self.sentinels[0]).await;
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(&self.master)
            .query_async(&mut s)
            .await
            .expect("SENTINEL FAILOVER");
        let promoted = wait_for(
            "the sentinels to promote the replica",
            Duration::from_secs(60),
            || async { self.primary_port().await.filter(|p| *p != port) },
        )
        .await;
        (port, promoted)
    }
}

/// Waits (up to 5 s) until one replica has what `c`'s primary acknowledged: what Redis
/// replication itself can lose (an acknowledged write not yet replicated) is not what the tests
/// are about.
pub async fn replicated(c: &mut Conn) {
    let replicas: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(c)
        .await
        .expect("WAIT");
    assert_eq!(replicas, 1, "the replica did not acknowledge the writes");
}
