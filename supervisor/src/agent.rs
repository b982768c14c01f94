//! The agent: everything asynchronous, on one thread with a current-thread tokio runtime.
//!
//! It connects to the Kubernetes API when the pod is known (and goes on without it otherwise),
//! watches the pod for the drain annotation, runs the wrap-mode drain or the task loop, samples
//! usage and reports it, mirrors the activity, and at exit writes the last usage report.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use qscaler_crds::names::ANNOTATION_ACTIVITY;
use qscaler_crds::usage::{annotation_key, UsageReport};
use tokio::sync::{mpsc, watch, Mutex};
use tracing::{debug, error, info, warn};

use crate::activity::{self, Activity};
use crate::bridge::{AgentSide, GoneGuard, Notice};
use crate::broker::Broker;
use crate::cli::Options;
use crate::pod::PodApi;
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

    // The Kubernetes side, when the pod is known and the API answers.
    let (drain_tx, drain_rx) = watch::channel(false);
    let pod = match o.pod() {
        None => {
            info!("POD_NAME/POD_NAMESPACE not set: plain init, usage goes to the log");
            None
        }
        Some((ns, name)) => match PodApi::connect(&ns, &name).await {
            Ok((api, draining)) => {
                info!("watching pod {ns}/{name} for the drain annotation");
                drain_tx.send_replace(draining);
                tokio::spawn(api.clone().watch_drain(drain_tx.clone()));
                Some(api)
            }
            Err(e) => {
                warn!("no Kubernetes API ({e}): plain init, usage goes to the log");
                None
            }
        },
    };

    // Activity: from the worker's socket (wrap) or the task loop (task), to the annotation.
    let (act_tx, act_rx) = watch::channel(None::<Activity>);
    if let Some(sock) = inputs.activity_socket {
        tokio::spawn(activity::listen(sock, act_tx.clone()));
    }
    if let Some(api) = pod.clone() {
        tokio::spawn(mirror_activity(api, act_rx));
    }

    // Usage.
    let usage = Arc::new(Mutex::new(Usage {
        sampler: Sampler::new(sys::own_pid().as_raw(), !o.no_cgroup),
        meter: Meter::new(Sampler::ticks_per_sec()),
        policy: Policy {
            min_interval: o.report_interval,
            rise: o.report_rise,
        },
        last: None,
        pod: pod.clone(),
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
        let tasks = TaskLoop {
            broker,
            queue: o.queue.clone().unwrap_or_default(),
            pod: inputs.consumer,
            max_retries: o.max_retries,
            requester: requester.clone(),
            notices: task_rx,
            drain: drain_rx,
            shutdown: shutdown_rx,
            activity: act_tx,
        };
        let r = requester.clone();
        tokio::spawn(async move {
            let code = tasks.run().await;
            info!("task mode finished; exiting with {code}");
            r.send(crate::bridge::Request::Exit(code));
        });
    } else {
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
        if tokio::time::timeout(FINAL_REPORT_TIMEOUT, report)
            .await
            .is_err()
        {
            warn!("the last usage report timed out");
        }
    }
    drop(drain_tx);
    side.done();
}

/// Writes the activity annotation whenever it changes (the latest value wins).
async fn mirror_activity(api: PodApi, mut rx: watch::Receiver<Option<Activity>>) {
    let mut shown: Option<Activity> = None;
    while rx.changed().await.is_ok() {
        let Some(a) = *rx.borrow_and_update() else {
            continue;
        };
        if shown == Some(a) {
            continue;
        }
        match api.annotate(ANNOTATION_ACTIVITY, a.as_str()).await {
            Ok(()) => shown = Some(a),
            Err(e) => warn!("could not write the activity annotation: {e}"),
        }
    }
}
