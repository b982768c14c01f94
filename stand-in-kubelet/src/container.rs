//! One container's life on this node: build its environment, start it, wait for it, apply the
//! restart policy with backoff, and stop it (SIGTERM, grace, SIGKILL) when told to. It reports
//! every state change to its pod as a [`ContainerRecord`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::cgroup::{ContainerCgroup, Limits};
use super::env;
use super::process::{Launch, Running};
use super::status::{
    backoff, termination_reason, ContainerRecord, RestartPolicy, State, Termination,
};
use super::Node;
use qscaler_crds::quantity;

/// What the pod wants its containers to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// Keep running.
    No,
    /// SIGTERM now, SIGKILL at the deadline.
    Graceful { deadline: Instant },
    /// SIGKILL now.
    Kill,
}

/// A state change of a container, for its pod.
#[derive(Debug, Clone)]
pub struct Report {
    pub init: bool,
    pub index: usize,
    pub record: ContainerRecord,
    /// The container will not run again (its task has ended).
    pub done: bool,
}

/// Everything one container task needs.
pub struct Job {
    pub node: Arc<Node>,
    pub pod: Pod,
    pub container: Container,
    pub init: bool,
    pub index: usize,
    pub policy: RestartPolicy,
    pub pod_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub reports: mpsc::UnboundedSender<Report>,
    pub stop: watch::Receiver<Stop>,
}

impl Job {
    fn report(&self, record: &ContainerRecord, done: bool) {
        let _ = self.reports.send(Report {
            init: self.init,
            index: self.index,
            record: record.clone(),
            done,
        });
    }

    fn event(&self, warning: bool, reason: &str, note: String) {
        self.node.events.post(&self.pod, warning, reason, note);
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() != Stop::No
    }

    /// Sleep, or return early (true) when told to stop.
    async fn sleep_or_stop(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            if self.stopping() {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return false,
                changed = self.stop.changed() => if changed.is_err() { return true },
            }
        }
    }

    fn limits(&self) -> Limits {
        let limits = self
            .container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref());
        Limits {
            memory_bytes: limits
                .and_then(|l| l.get("memory"))
                .and_then(|q| quantity::bytes(&q.0)),
            cpu_millis: limits
                .and_then(|l| l.get("cpu"))
                .and_then(|q| quantity::cpu_millis(&q.0)),
        }
    }

    fn base_env(&self) -> Vec<(String, String)> {
        vec![
            ("PATH".into(), self.node.container_path.clone()),
            ("HOME".into(), "/root".into()),
            (
                "HOSTNAME".into(),
                self.pod.metadata.name.clone().unwrap_or_default(),
            ),
            ("KUBECONFIG".into(), self.kubeconfig.display().to_string()),
        ]
    }

    /// Run the container until it is done for good or told to stop.
    pub async fn run(mut self) {
        let name = self.container.name.clone();
        let image = self.container.image.clone().unwrap_or_default();
        let mut rec = ContainerRecord::new(&name, &image);
        let log = self.pod_dir.join(format!("{name}.log"));
        let pid_file = self.pod_dir.join(format!("{name}.pid"));
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        loop {
            if self.stopping() {
                break;
            }
            let vars = match env::resolve(&self.node.client, &self.pod, &self.container).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::info!(container = %name, error = %e, "cannot build the environment");
                    let waiting = State::Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message: Some(e.to_string()),
                    };
                    if rec.state != waiting {
                        self.event(true, "Failed", format!("Error: {e}"));
                    }
                    rec.state = waiting;
                    self.report(&rec, false);
                    if self.sleep_or_stop(Duration::from_secs(2)).await {
                        break;
                    }
                    continue;
                }
            };
            let command = self.container.command.clone().unwrap_or_default();
            let args = self.container.args.clone().unwrap_or_default();
            let Some(argv) = self.node.images.argv(&image, &command, &args) else {
                rec.state = State::Waiting {
                    reason: "CreateContainerError".into(),
                    message: Some(format!(
                        "no command: image {image:?} has no entrypoint in the image table and the \
                         container sets no command"
                    )),
                };
                self.report(&rec, false);
                while !self.sleep_or_stop(Duration::from_secs(3600)).await {}
                break;
            };
            let argv: Vec<String> = argv.iter().map(|a| env::expand(a, &vars)).collect();
            let mut full_env = self.base_env();
            full_env.extend(vars);

            let cgroup = match ContainerCgroup::create(
                &self.node.cgroups,
                &uid,
                &name,
                self.limits(),
            ) {
                Ok(cg) => cg,
                Err(e) => {
                    tracing::warn!(container = %name, error = %e, "no cgroup: limits not enforced");
                    None
                }
            };
            let launch = Launch {
                launcher: self.node.launcher.clone(),
                argv,
                env: full_env,
                cwd: self
                    .container
                    .working_dir
                    .clone()
                    .map(PathBuf::from)
                    .filter(|d| d.is_dir())
                    .unwrap_or_else(|| self.pod_dir.clone()),
                log: log.clone(),
                truncate_log: rec.restart_count == 0,
                cgroup_procs: cgroup.as_ref().map(|c| c.procs_files()).unwrap_or_default(),
                hostname: self.pod.metadata.name.clone(),
            };
            let started_at = Timestamp::now();
            let (exit_code, message) = match Running::start(&launch) {
                Ok(mut proc) => {
                    let _ = std::fs::write(&pid_file, proc.wrapper_pid().to_string());
                    tracing::info!(container = %name, pid = proc.wrapper_pid(), argv = ?launch.argv, "started");
                    rec.state = State::Running { started_at };
                    self.report(&rec, false);
                    self.event(false, "Started", format!("Started container {name}"));
                    let code = self.wait_or_stop(&mut proc).await;
                    let _ = std::fs::remove_file(&pid_file);
                    (code, None)
                }
                Err(e) => {
                    tracing::warn!(container = %name, error = %e, "could not start");
                    (128, Some(format!("starting the process: {e}")))
                }
            };
            let oom = cgroup.as_ref().is_some_and(ContainerCgroup::oom_killed);
            if let Some(cg) = &cgroup {
                cg.remove().await;
            }
            let reason = if message.is_some() {
                "StartError"
            } else {
                termination_reason(exit_code, oom)
            };
            tracing::info!(container = %name, exit_code, reason, "ended");
            let term = Termination {
                exit_code,
                reason: reason.to_string(),
                message,
                started_at,
                finished_at: Timestamp::now(),
            };
            if self.stopping() || !self.policy.restarts(exit_code) {
                rec.state = State::Terminated(term);
                self.report(&rec, true);
                return;
            }
            rec.last = Some(term);
            rec.restart_count += 1;
            let delay = backoff(rec.restart_count);
            self.event(
                true,
                "BackOff",
                format!(
                    "Back-off restarting failed container {name} ({}s)",
                    delay.as_secs()
                ),
            );
            rec.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}s restarting failed container={name} pod={}",
                    delay.as_secs(),
                    self.pod.metadata.name.as_deref().unwrap_or("")
                )),
            };
            self.report(&rec, false);
            if self.sleep_or_stop(delay).await {
                break;
            }
        }
        // Stopped before (re)starting: the last state stands.
        if let State::Waiting { .. } = rec.state {
            if let Some(last) = rec.last.clone() {
                rec.state = State::Terminated(last);
            } else {
                rec.state = State::Terminated(Termination {
                    exit_code: 0,
                    reason: "ContainerStatusUnknown".into(),
                    message: Some("the container was never started".into()),
                    started_at: Timestamp::now(),
                    finished_at: Timestamp::now(),
                });
            }
        }
        self.report(&rec, true);
    }

    /// Wait for the process; on a stop request, SIGTERM then SIGKILL at the deadline.
    async fn wait_or_stop(&mut self, proc: &mut Running) -> i32 {
        let name = self.container.name.clone();
        let (events, pod) = (self.node.events.clone(), self.pod.clone());
        let stop = &mut self.stop;
        let mut sent_term = false;
        let mut sent_kill = false;
        let mut closed = false;
        loop {
            let deadline = match *stop.borrow_and_update() {
                Stop::No => None,
                Stop::Graceful { deadline } => Some(deadline),
                Stop::Kill => {
                    sent_term = true;
                    None
                }
            };
            let wants_kill = closed || matches!(*stop.borrow(), Stop::Kill);
            if wants_kill && !sent_kill {
                proc.signal(Signal::SIGKILL).await;
                sent_kill = true;
            } else if deadline.is_some() && !sent_term {
                tracing::info!(container = %name, "SIGTERM");
                events.post(&pod, false, "Killing", format!("Stopping container {name}"));
                proc.signal(Signal::SIGTERM).await;
                sent_term = true;
            }
            let deadline = deadline.filter(|_| !sent_kill);
            tokio::select! {
                r = proc.wait() => {
                    return r.unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "waiting for the container");
                        255
                    });
                }
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::info!(container = %name, "grace period over: SIGKILL");
                    proc.signal(Signal::SIGKILL).await;
                    sent_kill = true;
                }
                changed = async {
                    if closed { std::future::pending().await } else { stop.changed().await }
                } => {
                    if changed.is_err() {
                        closed = true;
                    }
                }
            }
        }
    }
}
