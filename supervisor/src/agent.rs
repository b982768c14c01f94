//! The agent: everything asynchronous, on one thread with a current-thread tokio runtime.
//!
//! It connects to the Kubernetes API when the pod is known, retrying for as long as it takes (and
//! goes on without it when the pod is not known), watches the pod for the drain annotation and its
//! deletion, runs the wrap-mode drain or the task loop, keeps the kubelet's clock once the pod is
//! ending (SIGTERM or deletion: see [`ending`]), samples usage and reports it (to the log until the
//! API is reached), mirrors the activity (with the node autoscalers' annotations), and at exit writes
//! the last usage report.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use qscaler_crds::usage::{annotation_key, UsageReport};
use tokio::sync::{mpsc, watch, Mutex};
use tracing::{debug, error, info, warn};

use crate::activity::{self, Activity};
use crate::bridge::{AgentSide, GoneGuard, Notice, Request, Requester};
use crate::broker::Broker;
use crate::cli::Options;
use crate::ending::{self, Ending};
use crate::pod::{activity_patch, PodApi, PodState};
use crate::sampler::Sampler;
use crate::task::{self, TaskLoop};
use crate::usage::{should_report, Meter, Policy};
use crate::{drain, sys};

/// How long the last usage report at exit may take.
const FINAL_REPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the agent needs besides the options.
pub struct Inputs {
    pub options: Options,
    pub broker: Option<Broker>,
    pub activity_socket: Option<UnixDatagram>,
    /// The name of our processing list's owner (the pod, or the host outside Kubernetes).
    pub consumer: String,
}

/// Starts the agent thread. It inherits the blocked signal mask of the main thread.
pub fn start(inputs: Inputs, side: AgentSide) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("agent".into())
        .spawn(move || {
            let _guard = GoneGuard(side.requester());
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run(inputs, side)),
                Err(e) => error!("could not start the agent's runtime: {e}"),
            }
        })
}

/// Usage sampling and reporting state, shared by the periodic sampler and the exit report.
struct Usage {
    sampler: Sampler,
    meter: Meter,
    policy: Policy,
    last: Option<(UsageReport, Duration)>,
    pod: Option<PodApi>,
    key: String,
}

fn epoch_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Usage {
    async fn tick(&mut self, force: bool) {
        let Some(reading) = self.sampler.read() else {
            return;
        };
        let peaks = self.meter.observe(&reading);
        let last = self.last.as_ref().map(|(r, at)| (r, *at));
        if !force && !should_report(self.policy, last, reading.at, &peaks) {
            return;
        }
        let report = UsageReport {
            reported_at: Some(epoch_secs()),
            ..peaks
        };
        let json = report.to_json();
        let ok = match &self.pod {
            None => {
                info!(usage = %json, "usage");
                true
            }
            Some(pod) => match pod.annotate(&self.key, &json).await {
                Ok(()) => {
                    debug!(usage = %json, "usage reported");
                    true
                }
                Err(e) => {
                    warn!(usage = %json, "could not report usage: {e}");
                    false
                }
            },
        };
        // A failed write still waits out the interval before the next attempt.
        let base = if ok {
            peaks
        } else {
            self.last.map(|l| l.0).unwrap_or_default()
        };
        self.last = Some((base, reading.at));
    }
}

async fn run(inputs: Inputs, mut side: AgentSide) {
    let o = inputs.options;
    let requester = side.requester();

    let (drain_tx, drain_rx) = watch::channel(false);
    // Our pod as last read (None until it is, or for ever without one).
    let (pod_tx, pod_rx) = watch::channel(None::<PodState>);
    // When SIGTERM first arrived; whether SIGINT or SIGQUIT did (a stop without grace).
    let (term_tx, term_rx) = watch::channel(None::<Instant>);
    let (cold_tx, cold_rx) = watch::channel(false);
    // Once the pod is ending: when the kubelet's SIGKILL is due.
    let (ending_tx, ending_rx) = watch::channel(None::<Ending>);
    tokio::spawn(ending::track(
        term_rx,
        pod_rx,
        o.fallback_grace(),
        ending_tx,
        requester.clone(),
    ));
    // Whether our pod has been read once (always true without a pod to read): task mode takes no
    // task before, since the pod may already be told to drain.
    let (seen_tx, seen_rx) = watch::channel(o.pod().is_none());
    let (act_tx, act_rx) = watch::channel(None::<Activity>);
    if let Some(sock) = inputs.activity_socket {
        tokio::spawn(activity::listen(sock, act_tx.clone()));
    }

    // Usage; reports go to the log until the API is reached.
    let usage = Arc::new(Mutex::new(Usage {
        sampler: Sampler::new(sys::own_pid().as_raw(), !o.no_cgroup),
        meter: Meter::new(Sampler::ticks_per_sec()),
        policy: Policy {
            min_interval: o.report_interval,
            rise: o.report_rise,
        },
        last: None,
        pod: None,
        key: annotation_key(&o.container),
    }));
    if !o.sample_interval.is_zero() {
        let usage = usage.clone();
        let every = o.sample_interval;
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                t.tick().await;
                usage.lock().await.tick(false).await;
            }
        });
    }

    // The Kubernetes side, when the pod is known: connect (for as long as it takes), then watch.
    match o.pod() {
        None => info!("POD_NAME/POD_NAMESPACE not set: plain init, usage goes to the log"),
        Some((ns, name)) => {
            tokio::spawn(kubernetes(
                ns,
                name,
                drain_tx.clone(),
                pod_tx,
                seen_tx,
                usage.clone(),
                act_rx,
            ));
        }
    }

    // Notices from the init loop.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (task_tx, task_rx) = mpsc::unbounded_channel();
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<i32>();
    let mut notices = std::mem::replace(&mut side.notices, mpsc::unbounded_channel().1);
    tokio::spawn(async move {
        let mut exit_tx = Some(exit_tx);
        while let Some(n) = notices.recv().await {
            match n {
                Notice::TaskStarted(_) | Notice::TaskEnded(_) => {
                    let _ = task_tx.send(n);
                }
                Notice::Signal(sig) => {
                    if sig == Signal::SIGTERM {
                        let now = Instant::now();
                        term_tx.send_if_modified(|t| t.get_or_insert(now) == &now);
                    } else if task::is_shutdown_signal(sig) {
                        cold_tx.send_replace(true);
                    }
                    if task::is_shutdown_signal(sig) {
                        shutdown_tx.send_replace(true);
                    }
                }
                Notice::Exiting(code) => {
                    if let Some(tx) = exit_tx.take() {
                        let _ = tx.send(code);
                    }
                }
            }
        }
    });

    // The mode.
    if o.task {
        let Some(broker) = inputs.broker else {
            error!("task mode without a broker");
            requester.send(crate::bridge::Request::Exit(2));
            return;
        };
        tokio::spawn(log_task_mode_drain(drain_rx.clone()));
        let tasks = TaskLoop {
            broker,
            queue: o.queue.clone().unwrap_or_default(),
            pod: inputs.consumer,
            max_retries: o.max_retries,
            format: o.queue_format,
            group: o.stream_group.clone(),
            requester: requester.clone(),
            notices: task_rx,
            drain: drain_rx,
            pod_seen: seen_rx,
            shutdown: shutdown_rx,
            cold: cold_rx,
            ending: ending_rx.clone(),
            activity: act_tx,
        };
        let r = requester.clone();
        let remap_exit = o.remap_exit.clone();
        tokio::spawn(async move {
            let code = tasks.run().await;
            let code = match crate::exit::remapped(code, &remap_exit) {
                0 if code != 0 => {
                    info!("task mode finished with {code}, remapped to 0 (--remap-exit)");
                    0
                }
                c => c,
            };
            info!("task mode finished; exiting with {code}");
            r.send(crate::bridge::Request::Exit(code));
        });
    } else {
        tokio::spawn(kill_at_deadline(ending_rx.clone(), requester.clone()));
        tokio::spawn(drain::wrap(
            drain_rx,
            shutdown_rx,
            o.drain_debounce,
            o.drain_signal,
            o.drain_timeout,
            requester.clone(),
        ));
    }

    // Until the init loop says it exits; then the last usage report.
    if let Ok(code) = exit_rx.await {
        debug!("supervisor exiting with {code}: last usage report");
        let report = async { usage.lock().await.tick(true).await };
        // Before the kubelet's SIGKILL when the pod is ending.
        let limit = match *ending_rx.borrow() {
            Some(e) => FINAL_REPORT_TIMEOUT.min(e.left(Duration::from_millis(100))),
            None => FINAL_REPORT_TIMEOUT,
        };
        if tokio::time::timeout(limit, report).await.is_err() {
            warn!("the last usage report timed out");
        }
    }
    drop(drain_tx);
    side.done();
}

/// Connects to the API for as long as it takes (a supervisor that gave up would ignore a drain for
/// life), publishes the pod's drain state and then that it was seen, hands the API to the usage
/// reports and the activity mirror, and watches the pod.
async fn kubernetes(
    ns: String,
    name: String,
    drain_tx: watch::Sender<bool>,
    pod_tx: watch::Sender<Option<PodState>>,
    seen_tx: watch::Sender<bool>,
    usage: Arc<Mutex<Usage>>,
    activity: watch::Receiver<Option<Activity>>,
) {
    let (api, state) = PodApi::connect_until_up(&ns, &name).await;
    // The drain state first: a task loop released by `seen` must already see it.
    drain_tx.send_replace(state.draining);
    pod_tx.send_replace(Some(state));
    seen_tx.send_replace(true);
    {
        // The next sample is reported to the pod, whatever went to the log before.
        let mut usage = usage.lock().await;
        usage.pod = Some(api.clone());
        usage.last = None;
    }
    tokio::spawn(mirror_activity(api.clone(), activity));
    api.watch_drain(drain_tx, pod_tx).await;
}

/// Wrap mode: once the pod is ending, SIGKILL the worker (and everything else) shortly before the
/// kubelet would, so that the end is ours: logged, with the last usage report written.
async fn kill_at_deadline(mut ending: watch::Receiver<Option<Ending>>, requester: Requester) {
    let mut open = true;
    loop {
        let at = ending.borrow_and_update().map(|e| e.kill_at());
        if !open && at.is_none() {
            return;
        }
        tokio::select! {
            _ = ending::until(at) => {
                requester.send(Request::KillAtDeadline);
                return;
            }
            r = ending.changed(), if open => open = r.is_ok(),
        }
    }
}

/// Task mode: says when a drain is requested or cancelled (wrap mode's drain logs its own steps).
async fn log_task_mode_drain(mut drain: watch::Receiver<bool>) {
    let mut shown = false;
    while drain.changed().await.is_ok() {
        let now = *drain.borrow_and_update();
        if now == std::mem::replace(&mut shown, now) {
            continue;
        }
        if now {
            info!("drain requested: the current task runs to its end and no new task is taken");
        } else {
            info!("drain annotation removed: taking tasks again");
        }
    }
}

/// Writes the activity annotation, with the node autoscalers' annotations that follow it (see
/// [`activity_patch`]), whenever it changes (the latest value wins), starting with the value at
/// hand when the API was reached.
async fn mirror_activity(api: PodApi, mut rx: watch::Receiver<Option<Activity>>) {
    let mut shown: Option<Activity> = None;
    loop {
        let current = *rx.borrow_and_update();
        if let Some(a) = current.filter(|a| shown != Some(*a)) {
            match api.patch(&activity_patch(a)).await {
                Ok(()) => shown = Some(a),
                Err(e) => warn!("could not write the activity annotation: {e}"),
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
