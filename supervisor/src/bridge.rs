//! The two channels between the init loop (main thread, synchronous) and the agent (tokio thread).
//!
//! Agent → init: [`Request`]s on a std channel, each followed by a write to an eventfd that the init
//! loop polls next to its signalfd. Init → agent: [`Notice`]s on an unbounded tokio channel, whose
//! `send` never blocks, so the init loop never waits for the agent (except, bounded, at exit).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::eventfd::EventFd;
use nix::sys::signal::Signal;
use tokio::sync::mpsc as tmpsc;

use crate::exit::Outcome;

/// What the agent asks the init loop to do.
#[derive(Debug)]
pub enum Request {
    /// Drain: send this signal to the worker (wrap mode) and remember it was a drain.
    DrainSignal(Signal),
    /// The drain timeout passed: SIGKILL the worker.
    KillWorker,
    /// Task mode: run COMMAND with this payload on stdin.
    SpawnTask(Vec<u8>),
    /// Task mode: the kubelet's SIGKILL is near: send this signal to the running task.
    SignalTask(Signal),
    /// Wrap mode: the kubelet's SIGKILL is near: SIGKILL the worker and everything else now, so the
    /// end is ours (logged, with the last usage report) and not the kubelet's.
    KillAtDeadline,
    /// The pod is ending: the kubelet's SIGKILL is due at this instant (updated when it changes).
    /// The init loop's own waits at exit end before it.
    Deadline(std::time::Instant),
    /// Task mode: the agent is done; exit with this code once the descendants are gone.
    Exit(i32),
    /// The agent thread ended (normally or not). In task mode there is nobody left to take tasks.
    AgentGone,
}

/// What the init loop tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A task process started (its pid), or could not be started (the would-be exit code).
    TaskStarted(Result<i32, i32>),
    /// The current task process ended.
    TaskEnded(Outcome),
    /// A forwarded signal arrived from outside (e.g. SIGTERM: the pod is being deleted).
    Signal(Signal),
    /// The supervisor is about to exit with this code: write the last usage report, then ack.
    Exiting(i32),
}

/// The init loop's end.
pub struct InitSide {
    pub requests: mpsc::Receiver<Request>,
    pub waker: Arc<EventFd>,
    notices: tmpsc::UnboundedSender<Notice>,
    done: mpsc::Receiver<()>,
}

/// The agent's end.
pub struct AgentSide {
    requests: mpsc::Sender<Request>,
    waker: Arc<EventFd>,
    pub notices: tmpsc::UnboundedReceiver<Notice>,
    done: mpsc::Sender<()>,
}

/// Both ends, sharing `waker`.
pub fn bridge(waker: EventFd) -> (InitSide, AgentSide) {
    let waker = Arc::new(waker);
    let (rq_tx, rq_rx) = mpsc::channel();
    let (n_tx, n_rx) = tmpsc::unbounded_channel();
    let (d_tx, d_rx) = mpsc::channel();
    (
        InitSide {
            requests: rq_rx,
            waker: waker.clone(),
            notices: n_tx,
            done: d_rx,
        },
        AgentSide {
            requests: rq_tx,
            waker,
            notices: n_rx,
            done: d_tx,
        },
    )
}

impl InitSide {
    /// Tells the agent; a gone agent is fine (the init loop works without it).
    pub fn notify(&self, n: Notice) {
        let _ = self.notices.send(n);
    }

    /// Waits, at most `timeout`, for the agent to finish its exit work.
    pub fn wait_done(&self, timeout: Duration) -> bool {
        self.done.recv_timeout(timeout).is_ok()
    }
}

impl AgentSide {
    /// A handle for sending requests from any task.
    pub fn requester(&self) -> Requester {
        Requester {
            requests: self.requests.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Acknowledges [`Notice::Exiting`].
    pub fn done(&self) {
        let _ = self.done.send(());
    }
}

/// Sends [`Request`]s to the init loop and wakes it.
#[derive(Clone)]
pub struct Requester {
    requests: mpsc::Sender<Request>,
    waker: Arc<EventFd>,
}

impl Requester {
    pub fn send(&self, r: Request) {
        if self.requests.send(r).is_ok() {
            // Only fails when the counter would overflow, which a pending wake-up already covers.
            let _ = self.waker.write(1);
        }
    }
}

/// Sends [`Request::AgentGone`] when dropped, so the init loop learns that the agent thread ended
/// even when it ended by a panic.
pub struct GoneGuard(pub Requester);

impl Drop for GoneGuard {
    fn drop(&mut self) {
        self.0.send(Request::AgentGone);
    }
}
