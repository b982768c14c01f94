//! The operator as a child process of a test: `target/debug/qscaler-operator --namespace <ns>`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{wait_for, workspace_bin, Cluster};

const T: Duration = Duration::from_secs(60);

/// A qscaler-operator child process watching one namespace (`--namespace`), so tests stay isolated and
/// can kill or restart their own operator. Polls every 200 ms; `extra` flags come last and win.
pub struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    pub async fn start(cluster: &Cluster, ns: &str, extra: &[&str]) -> Operator {
        let bin = workspace_bin("qscaler-operator");
        assert!(
            bin.exists(),
            "{} missing: cargo build -p qscaler-operator",
            bin.display()
        );
        // One log per operator: two started in one test (leader election) must not read each
        // other's addresses.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let log = std::env::temp_dir().join(format!(
            "qscaler-operator-{ns}-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&log)
            .expect("operator log file");
        let err = out.try_clone().expect("operator log file");
        let mut cmd = Command::new(bin);
        if !extra.iter().any(|a| a.starts_with("--leader-elect")) {
            cmd.arg("--leader-elect=false");
        }
        let child = cmd
            .args(["--namespace", ns, "--metrics-bind-address", "127.0.0.1:0"])
            .args(["--health-probe-bind-address", "127.0.0.1:0"])
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["--poll-interval", "200ms"].into_iter().filter(|_| {
                // clap refuses a flag given twice.
                !extra.iter().any(|a| a.starts_with("--poll-interval"))
            }))
            .args(extra)
            .env("RUST_LOG", "info,qscaler_operator=debug")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("spawning qscaler-operator");
        Operator { child, log }
    }

    /// SIGKILL: no chance to clean up, as a crashed or evicted operator.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The metrics address the operator logged (it binds port 0).
    pub async fn metrics_addr(&self) -> String {
        self.logged_addr("serving /metrics").await
    }

    /// The probes' address (/healthz, /livez, /readyz) the operator logged (it binds port 0).
    pub async fn probe_addr(&self) -> String {
        self.logged_addr("serving /healthz").await
    }

    async fn logged_addr(&self, marker: &str) -> String {
        wait_for(&format!("{marker:?} in the operator's log"), T, || async {
            let log = self.log();
            let line = log.lines().find(|l| l.contains(marker))?;
            let clean = strip_ansi(line);
            let addr = clean.split("addr=").nth(1)?.split_whitespace().next()?;
            Some(addr.to_string())
        })
        .await
    }
}

/// `s` without ANSI escape sequences (a log written for a terminal).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How many clients subscribe to pushes to `queue` (its keyspace channel in database 0): the
/// operator's push trigger is one once its poller watches the queue. `None` when Redis does not
/// answer.
pub async fn push_subscribers(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
) -> Option<i64> {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(qscaler_crds::names::keys::keyspace_channel(0, queue))
        .query_async(conn)
        .await
        .ok()?;
    Some(n)
}
