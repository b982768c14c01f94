//! The kubelet's clock: once our pod is ending (SIGTERM arrived, or the pod watch saw the pod's
//! deletion), when its SIGKILL is due, so that qsupervisor can act shortly before it.
//!
//! The kubelet (and `docker stop`) sends SIGTERM, waits the grace period, then sends SIGKILL. The
//! grace is the deletion's (`metadata.deletionGracePeriodSeconds`: `kubectl delete --grace-period`,
//! an eviction's, else the pod's own), else the pod's `spec.terminationGracePeriodSeconds` (a
//! kubelet-initiated stop has no deletion), else `--max-task-seconds` + the operator's margin (no pod
//! to read), else Kubernetes' default of 30 s. It is counted from the first sign of the end: the
//! SIGTERM or the deletion seen by the pod watch, whichever came first. Counting with our own clock
//! from our own observation never depends on the node's clock agreeing with the API server's
//! (`deletionTimestamp` is the API server's time); it errs late only by the time the kubelet took
//! to act, which the margins below absorb.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;

use crate::bridge::{Request, Requester};
use crate::pod::PodState;

/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Task mode: the task gets SIGTERM this long before the kubelet's SIGKILL (at most half the grace).
pub const TERM_BEFORE: Duration = Duration::from_secs(2);
/// Task mode: the task gets SIGKILL this long before the kubelet's (at most a quarter of the grace);
/// wrap mode: the worker does. What is left is for returning the task and the last usage report.
pub const KILL_BEFORE: Duration = Duration::from_secs(1);

/// Where the grace period came from (for the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Deletion,
    PodSpec,
    MaxTaskSeconds,
    Default,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Deletion => "the pod's deletion",
            Source::PodSpec => "the pod's terminationGracePeriodSeconds",
            Source::MaxTaskSeconds => "--max-task-seconds + 10 s",
            Source::Default => "the default",
        }
    }
}

/// The grace period the kubelet gives us, and where it was read.
pub fn grace(pod: Option<&PodState>, fallback: Option<Duration>) -> (Duration, Source) {
    let secs = |s: i64| Duration::from_secs(s.max(0) as u64);
    match (
        pod.and_then(|p| p.deletion_grace),
        pod.and_then(|p| p.termination_grace),
    ) {
        (Some(d), _) => (secs(d), Source::Deletion),
        (None, Some(t)) => (secs(t), Source::PodSpec),
        (None, None) => match fallback {
            Some(f) => (f, Source::MaxTaskSeconds),
            None => (DEFAULT_GRACE, Source::Default),
        },
    }
}

/// When the pod ends for good (the kubelet's SIGKILL), and the grace it had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    pub deadline: Instant,
    pub grace: Duration,
}

impl Ending {
    pub fn new(started: Instant, grace: Duration) -> Ending {
        Ending {
            deadline: started.checked_add(grace).unwrap_or(started),
            grace,
        }
    }

    fn before(&self, margin: Duration) -> Instant {
        self.deadline.checked_sub(margin).unwrap_or(self.deadline)
    }

    /// Task mode: SIGTERM to the task.
    pub fn term_at(&self) -> Instant {
        self.before(TERM_BEFORE.min(self.grace / 2))
    }

    /// Task mode: SIGKILL to the task; wrap mode: SIGKILL to the worker.
    pub fn kill_at(&self) -> Instant {
        self.before(KILL_BEFORE.min(self.grace / 4))
    }

    /// How long is left until `at` before the deadline (zero when past).
    pub fn left(&self, margin: Duration) -> Duration {
        self.before(margin)
            .saturating_duration_since(Instant::now())
    }
}

/// Completes at `at`; `None` never.
pub async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Publishes the [`Ending`] once the pod is ending: from the SIGTERM's arrival (`term`) or the
/// deletion seen on the pod (`pod`), whichever came first, with the grace from [`grace`]; again
/// whenever the grace changes (a deletion repeated with a shorter grace). Each change is also sent
/// to the init loop, which bounds its own waits by it.
pub async fn track(
    mut term: watch::Receiver<Option<Instant>>,
    mut pod: watch::Receiver<Option<PodState>>,
    fallback: Option<Duration>,
    out: watch::Sender<Option<Ending>>,
    requester: Requester,
) {
    let mut deletion_seen: Option<Instant> = None;
    let (mut term_open, mut pod_open) = (true, true);
    loop {
        let signalled = *term.borrow_and_update();
        let state = *pod.borrow_and_update();
        if deletion_seen.is_none() && state.is_some_and(|s| s.deletion_grace.is_some()) {
            deletion_seen = Some(Instant::now());
            info!("our pod is being deleted");
        }
        let started = match (signalled, deletion_seen) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(started) = started {
            let (g, source) = grace(state.as_ref(), fallback);
            let e = Ending::new(started, g);
            if *out.borrow() != Some(e) {
                info!(
                    "ending: the kubelet's (or the runtime's) SIGKILL is due in {:.1?} (grace {g:?} from {})",
                    e.deadline.saturating_duration_since(Instant::now()),
                    source.as_str()
                );
                out.send_replace(Some(e));
                requester.send(Request::Deadline(e.deadline));
            }
        }
        tokio::select! {
            r = term.changed(), if term_open => term_open = r.is_ok(),
            r = pod.changed(), if pod_open => pod_open = r.is_ok(),
            else => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(deletion: Option<i64>, spec: Option<i64>) -> PodState {
        PodState {
            draining: false,
            deletion_grace: deletion,
            termination_grace: spec,
        }
    }

    #[test]
    fn grace_from_the_deletion_then_the_spec_then_the_flag_then_30s() {
        let s = Duration::from_secs;
        let p = state(Some(5), Some(30));
        assert_eq!(grace(Some(&p), Some(s(99))), (s(5), Source::Deletion));
        let p = state(None, Some(45));
        assert_eq!(grace(Some(&p), Some(s(99))), (s(45), Source::PodSpec));
        let p = state(None, None);
        assert_eq!(
            grace(Some(&p), Some(s(99))),
            (s(99), Source::MaxTaskSeconds)
        );
        assert_eq!(grace(None, Some(s(99))), (s(99), Source::MaxTaskSeconds));
        assert_eq!(grace(None, None), (s(30), Source::Default));
        let p = state(Some(-3), None);
        assert_eq!(grace(Some(&p), None), (s(0), Source::Deletion));
    }

    #[test]
    fn steps_come_shortly_before_the_deadline_and_never_before_the_start() {
        let t0 = Instant::now();
        let e = Ending::new(t0, Duration::from_secs(30));
        assert_eq!(e.deadline, t0 + Duration::from_secs(30));
        assert_eq!(e.term_at(), t0 + Duration::from_secs(28));
        assert_eq!(e.kill_at(), t0 + Duration::from_secs(29));
        // A short grace: half and three quarters of it.
        let e = Ending::new(t0, Duration::from_secs(2));
        assert_eq!(e.term_at(), t0 + Duration::from_secs(1));
        assert_eq!(e.kill_at(), t0 + Duration::from_millis(1500));
        let e = Ending::new(t0, Duration::ZERO);
        assert_eq!((e.term_at(), e.kill_at()), (t0, t0));
    }
}
