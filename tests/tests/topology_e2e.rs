//! Task mode on a Redis Cluster and on a Sentinel-watched primary (tests/redis-topologies.sh),
//! through the whole loop: queue → operator → pods (stand-in kubelet running qsupervisor + the
//! test worker) → scale down.
//!
//! * Cluster: a wave of tasks while the queue's slot (and with it the processing lists, retry hash,
//!   dead-letter list and registry, which share its hash tag) moves to another primary;
//! * Sentinel: a wave of tasks while the primary is SIGKILLed; the sentinels promote the replica.
//!
//! Both: every task ends at least once (nothing lost), nothing is left in a processing list or the
//! registry, the workers scale down to zero, and after the fault the QWorker never asks for fewer
//! workers than the backlog the test reads itself (a topology change is a reconnect, never an empty
//! queue). The workers record their events on the local cluster's single server, which no fault
//! touches.
//!
//! Needs the local cluster (`tests/cluster.sh up`) and the topologies (`tests/redis-topologies.sh
//! up`); `eval` both `env` outputs.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use qscaler_crds::names::keys;
use qscaler_queue::{Conn, RedisParams};
use qscaler_tests::operator::Operator;
use qscaler_tests::{wait_for, Cluster};
use redis::AsyncCommands;
use serde_json::{json, Value};

use common::topologies::*;
use common::*;

const TASKS: usize = 60;
const TASK_MS: &str = "250";
const MAX_REPLICAS: i32 = 3;

/// A task-mode QWorker whose tasks record start/end on the local cluster's single server.
fn task_qworker(queue: &str, events_url: &str, events: &str) -> Value {
    let mut qw = qworker(
        "w",
        queue,
        &[],
        json!({"maxReplicas": MAX_REPLICAS, "scalingFactor": 1}),
    );
    qw["spec"]["podSpec"]["containers"][0]["args"] = json!([
        "--task",
        "--",
        "qscaler-test-worker",
        "--stdin-task",
        "--task-ms",
        TASK_MS,
        "--redis-url",
        events_url,
        "--events",
        events
    ]);
    qw
}

/// The test's namespace, worker RBAC and operator, with a ScalerConfig of `config`.
async fn setup_with(prefix: &str, config: Value) -> (Cluster, String, Operator, NamespaceGuard) {
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace(prefix).await;
    let guard = NamespaceGuard {
        kubeconfig: cluster.kubeconfig.clone(),
        ns: ns.clone(),
    };
    worker_rbac(&cluster, &ns).await;
    scaler_config_of(&cluster, &ns, "redis", config).await;
    let op = Operator::start(&cluster, &ns, &[]).await;
    (cluster, ns, op, guard)
}

/// Queued + in flight, as the test reads it (the registry names the consumers); `None` while the
/// topology does not answer.
async fn backlog(c: &mut Conn, queue: &str) -> Option<u64> {
    let queued: u64 = c.llen(queue).await.ok()?;
    let consumers: Vec<String> = c.smembers(keys::consumers(queue)).await.ok()?;
    let mut in_flight = 0;
    for consumer in consumers {
        let n: u64 = c.llen(keys::processing(queue, &consumer)).await.ok()?;
        in_flight += n;
    }
    Some(queued + in_flight)
}

/// Workers the backlog asks for (scalingFactor 1, capped at maxReplicas).
fn asked(backlog: u64) -> i32 {
    i32::try_from(backlog).unwrap_or(i32::MAX).min(MAX_REPLICAS)
}

/// How long the operator may take to follow a backlog that rose: a failover can roll back writes
/// the old primary acknowledged but had not replicated (tasks taken or settled there come back),
/// and the operator sees that only at its next reading after the reconnect.
const CATCH_UP: Duration = Duration::from_secs(5);

/// After the fault, until the queue is empty: each sample reads the QWorker's desired count, then
/// the backlog. Nothing is pushed, so the backlog falls, and a desired count below what the later
/// backlog asks was decided on a reading that was short: an unsettled topology taken for an empty
/// queue. Only where the backlog rose (from `before`, read just before the fault, or from one
/// sample to the next: a rollback) may the operator take [`CATCH_UP`] to follow.
async fn watch_desired(
    cluster: &Cluster,
    ns: &str,
    params: &RedisParams,
    queue: &str,
    before: Option<u64>,
) -> usize {
    let mut samples = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut conn = None;
    let (mut last, mut rose_at) = (before, None::<Instant>);
    while Instant::now() < deadline {
        let desired = get_qworker(cluster, ns, "w")
            .await
            .status
            .map(|s| s.desired_replicas);
        if conn.is_none() {
            conn = connect(params).await;
        }
        let read = match conn.as_mut() {
            Some(c) => backlog(c, queue).await,
            None => None,
        };
        if let (Some(b), Some(prev)) = (read, last) {
            if b > prev {
                rose_at = Some(Instant::now());
            }
        }
        last = read.or(last);
        match (desired, read) {
            (_, Some(0)) => return samples,
            (Some(d), Some(b)) => {
                samples += 1;
                let following = rose_at.is_some_and(|t| t.elapsed() < CATCH_UP);
                assert!(
                    d >= asked(b) || following,
                    "desired {d} workers with a backlog of {b} (asks {})",
                    asked(b)
                );
            }
            (_, None) => conn = None,
            (None, _) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the queue {queue} was not emptied in 120 s");
}

/// Every task ended at least once; nothing is left in flight or registered; the workers are gone.
async fn assert_wave_done(
    cluster: &Cluster,
    ns: &str,
    params: &RedisParams,
    queue: &str,
    events: &str,
    op: &Operator,
) {
    let mut ev = cluster.redis().await;
    let ends: BTreeMap<String, usize> = wait_for("every task to end", T * 2, || {
        let mut ev = ev.clone();
        async move {
            let (_, ends) = task_events(&mut ev, queue).await;
            (ends.len() >= TASKS).then_some(ends)
        }
    })
    .await;
    for i in 0..TASKS {
        assert!(
            ends.contains_key(&format!("t{i}")),
            "task t{i} never ended\noperator log:\n{}",
            op.log()
        );
    }
    wait_for("the workers to scale down to zero", T, || async {
        worker_pods(cluster, ns, "w")
            .await
            .iter()
            .all(|p| !alive(p))
            .then_some(())
    })
    .await;
    let mut c = wait_for("the topology to answer", T, || connect(params)).await;
    let dead: u64 = c.llen(keys::dead_letter(queue)).await.expect("LLEN dead");
    assert_eq!(dead, 0, "tasks were dead-lettered");
    let registered: Vec<String> = wait_for("the registry to empty", T, || {
        let mut c = c.clone();
        async move {
            let m: Vec<String> = c.smembers(keys::consumers(queue)).await.ok()?;
            m.is_empty().then_some(m)
        }
    })
    .await;
    assert!(registered.is_empty());
    let _: () = ev.del(events).await.expect("DEL events");
}

/// One wave of [`TASKS`] on a test's QWorker `w`, through a fault.
struct Wave<'a> {
    cluster: &'a Cluster,
    ns: &'a str,
    params: &'a RedisParams,
    queue: &'a str,
    events: &'a str,
    op: &'a Operator,
}

impl Wave<'_> {
    /// Pushes the wave (through Sentinel, until a replica has it too: the fault must not roll
    /// the push back) and waits until it is under way on more than one worker; the backlog then.
    async fn start(&self, c: &mut Conn, sentinel: bool) -> Option<u64> {
        push(c, self.queue).await;
        if sentinel {
            replicated(c).await;
        }
        until_started(self.cluster, self.events).await;
        until_scaled_up(self.cluster, self.ns).await;
        backlog(c, self.queue).await
    }

    /// After the fault: desired never below what the backlog asks, then the wave done with
    /// nothing lost.
    async fn finish(&self, before: Option<u64>) {
        let samples = watch_desired(self.cluster, self.ns, self.params, self.queue, before).await;
        assert!(samples > 0, "no sample of desired vs backlog was taken");
        assert_wave_done(
            self.cluster,
            self.ns,
            self.params,
            self.queue,
            self.events,
            self.op,
        )
        .await;
    }
}

async fn push(c: &mut Conn, queue: &str) {
    let items: Vec<String> = (0..TASKS).map(|i| format!("t{i}")).collect();
    let _: () = c.lpush(queue, items).await.expect("LPUSH tasks");
}

/// Moves `slot` from the primary that serves it to another, key by key (`MIGRATE`), as
/// `redis-cli --cluster reshard` does; returns the new owner's address.
async fn move_slot(nodes: &[String], slot: u16) -> String {
    let mut owner = None;
    let mut ids = BTreeMap::new();
    for addr in nodes {
        let mut c = node(addr).await;
        let id: String = redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async(&mut c)
            .await
            .expect("CLUSTER MYID");
        let here: u64 = redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(slot)
            .query_async(&mut c)
            .await
            .expect("COUNTKEYSINSLOT");
        let nodes_text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c)
            .await
            .expect("CLUSTER NODES");
        if owner.is_none() {
            owner = nodes_text.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let serves = f.iter().skip(8).any(|r| match r.split_once('-') {
                    Some((a, b)) => {
                        a.parse::<u16>().is_ok_and(|a| a <= slot)
                            && b.parse::<u16>().is_ok_and(|b| slot <= b)
                    }
                    None => r.parse::<u16>() == Ok(slot),
                });
                serves.then(|| f[1].split('@').next().unwrap_or_default().to_string())
            });
        }
        let _ = here;
        ids.insert(addr.clone(), id);
    }
    let src = owner.expect("an owner of the slot");
    let dst = nodes
        .iter()
        .find(|a| **a != src)
        .expect("another node")
        .clone();
    let (mut s, mut d) = (node(&src).await, node(&dst).await);
    let setslot = |what: &'static str, id: String| {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SETSLOT").arg(slot).arg(what).arg(id);
        cmd
    };
    let _: () = setslot("IMPORTING", ids[&src].clone())
        .query_async(&mut d)
        .await
        .expect("IMPORTING");
    let _: () = setslot("MIGRATING", ids[&dst].clone())
        .query_async(&mut s)
        .await
        .expect("MIGRATING");
    let (host, port) = dst.rsplit_once(':').expect("host:port");
    loop {
        let batch: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query_async(&mut s)
            .await
            .expect("GETKEYSINSLOT");
        if batch.is_empty() {
            break;
        }
        let _: () = redis::cmd("MIGRATE")
            .arg(host)
            .arg(port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&batch)
            .query_async(&mut s)
            .await
            .expect("MIGRATE");
    }
    for addr in nodes {
        let mut c = node(addr).await;
        let _: () = setslot("NODE", ids[&dst].clone())
            .query_async(&mut c)
            .await
            .expect("SETSLOT NODE");
    }
    dst
}

/// Waits until the QWorker has scaled up to more than one live worker.
async fn until_scaled_up(cluster: &Cluster, ns: &str) {
    wait_for("more than one worker", T, || async {
        let alive = worker_pods(cluster, ns, "w")
            .await
            .iter()
            .filter(|p| alive(p))
            .count();
        (alive > 1).then_some(())
    })
    .await;
}

/// Waits until some task started: the wave is under way.
async fn until_started(cluster: &Cluster, events: &str) {
    let ev = cluster.redis().await;
    wait_for("the first task to start", T, || {
        let mut ev = ev.clone();
        async move {
            let n: u64 = ev.llen(events).await.ok()?;
            (n > 0).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_queue_loses_nothing_while_its_slot_moves() {
    qscaler_tests::cluster::skip_suite_without_cluster();
    let Some(topo) = Topologies::from_env() else {
        return;
    };
    let config = topo.cluster_config();
    let (cluster, ns, op, _guard) = setup_with("topo-cluster", config).await;
    let queue = format!("{ns}-jobs");
    let events = format!("{queue}:events");
    let params = topo.cluster_params();
    let mut c = connect(&params).await.expect("cluster connection");
    create_qworker(
        &cluster,
        &ns,
        task_qworker(&queue, &cluster.redis_url, &events),
    )
    .await;
    let wave = Wave {
        cluster: &cluster,
        ns: &ns,
        params: &params,
        queue: &queue,
        events: &events,
        op: &op,
    };
    let before = wave.start(&mut c, false).await;
    let slot = qscaler_queue::topology::slot(&queue);
    let to = move_slot(&topo.cluster, slot).await;
    eprintln!("slot {slot} of {queue} moved to {to}");
    wave.finish(before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_queue_loses_nothing_when_the_primary_is_killed_or_demoted() {
    qscaler_tests::cluster::skip_suite_without_cluster();
    let Some(topo) = Topologies::from_env() else {
        return;
    };
    let config = topo.sentinel_config();
    let (cluster, ns, op, _guard) = setup_with("topo-sentinel", config).await;
    let queue = format!("{ns}-jobs");
    let events = format!("{queue}:events");
    let params = topo.sentinel_params();
    let mut c = connect(&params).await.expect("primary connection");
    create_qworker(
        &cluster,
        &ns,
        task_qworker(&queue, &cluster.redis_url, &events),
    )
    .await;
    let wave = Wave {
        cluster: &cluster,
        ns: &ns,
        params: &params,
        queue: &queue,
        events: &events,
        op: &op,
    };
    let before = wave.start(&mut c, true).await;
    let revive = Revive;
    let (killed, promoted) = topo.kill_primary().await;
    eprintln!(
        "killed the primary on port {killed}; the replica on port {promoted} is the primary now"
    );
    wave.finish(before).await;

    // A second wave, and a failover without a kill: the old primary lives on as a replica that
    // still answers reads, so only asking who is primary (the operator's ROLE check; the workers'
    // UNBLOCKED and READONLY answers) moves everyone to the new one.
    drop(revive);
    let mut c = wait_for("the primary", T, || connect(&params)).await;
    let before = wave.start(&mut c, true).await;
    let (demoted, promoted) = topo.fail_over().await;
    eprintln!("SENTINEL FAILOVER: {demoted} is a replica, {promoted} the primary now");
    wave.finish(before).await;
}
