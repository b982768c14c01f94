//! Task mode: the supervisor consumes the Redis list itself, reliably (at-least-once).
//!
//! The protocol is [`qscaler_queue::task`]'s, shared with the operator: `BLMOVE` from the queue's
//! right end into our processing list (FIFO with `LPUSH` producers), acknowledge on exit 0, count a
//! failed run and run it again while the count is at most `--max-retries`, else dead-letter it.
//! What this loop adds:
//!
//! * a stream queue (`--queue-format stream`) runs the same loop on its consumer group
//!   ([`crate::task_queue`]: pending entries instead of a processing list);
//! * COMMAND runs with the payload on stdin;
//! * at start, and after any Redis error while taking, whatever is in our processing list is run
//!   first (a restarted container, or a `BLMOVE` whose reply was lost);
//! * before the first take, the consumer enters the queue's registry (the operator finds a vanished
//!   pod's list there); it leaves it at exit once its list is empty;
//! * at exit, anything still in our processing list (taken but not started because a drain came, or
//!   cut by a pod deletion) is given back to the queue's right end, to be taken next.
//!
//! Every Redis call is retried with backoff until it succeeds, so a broker restart (with
//! persistence) loses nothing; a task can run twice (at-least-once), never zero times. Retry counts
//! are keyed by payload: identical payloads share a count.
//!
//! No task is taken before our pod has been read once from the Kubernetes API (when there is a
//! pod to read): a pod told to drain while the API was unreachable must not start one.
//!
//! Drain and shutdown: a drain request, SIGTERM, SIGINT, SIGQUIT or the deletion of our pod wakes a
//! blocked `BLMOVE` at once with `CLIENT UNBLOCK`, and no new task is taken. After a drain or SIGTERM
//! the current task runs to its end, unless the pod is ending (SIGTERM or deletion) and its grace
//! period is about to run out: then, shortly before the kubelet's SIGKILL, the task gets SIGTERM and
//! then SIGKILL from us, and its payload goes straight back to the queue (no retry counted). SIGINT and
//! SIGQUIT are forwarded to the task at once (a stop without grace); a task they kill goes back too.

use std::future::Future;
use std::time::Duration;

use nix::sys::signal::Signal;
use qscaler_crds::qworker::QueueFormat;
use qscaler_queue::task::{self as queue, Settle};
use qscaler_queue::Conn;
use redis::RedisResult;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::activity::Activity;
use crate::backoff::Backoff;
use crate::bridge::{Notice, Request, Requester};
use crate::broker::Broker;
use crate::ending::{self, Ending};
use crate::exit::Outcome;
use crate::task_queue::{Consumer, Held};

/// How long one `BLMOVE` blocks (a safety net: drain wakes it earlier with `CLIENT UNBLOCK`).
const BLMOVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reply timeout of ordinary commands.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// The task loop's inputs.
pub struct TaskLoop {
    pub broker: Broker,
    pub queue: String,
    pub pod: String,
    pub max_retries: u32,
    /// A list or a stream.
    pub format: QueueFormat,
    /// A stream's consumer group (`None`: the default).
    pub group: Option<String>,
    pub requester: Requester,
    /// `TaskStarted`/`TaskEnded` notices from the init loop.
    pub notices: mpsc::UnboundedReceiver<Notice>,
    pub drain: watch::Receiver<bool>,
    /// True once our pod has been read: until then no task is taken (it may be told to drain).
    pub pod_seen: watch::Receiver<bool>,
    /// SIGTERM, SIGINT or SIGQUIT arrived: no new task.
    pub shutdown: watch::Receiver<bool>,
    /// SIGINT or SIGQUIT arrived: forwarded to the task, no waiting for Redis either.
    pub cold: watch::Receiver<bool>,
    /// The pod is ending (SIGTERM or its deletion seen): when the kubelet's SIGKILL is due.
    pub ending: watch::Receiver<Option<Ending>>,
    pub activity: watch::Sender<Option<Activity>>,
}

struct State {
    l: TaskLoop,
    keys: Consumer,
    control: Option<Conn>,
    blocking: Option<(Conn, i64)>,
    backoff: Backoff,
    interrupted: Option<i32>,
    /// Settling what was done (acknowledging, counting, returning): Redis is retried through a
    /// shutdown, until shortly before the kubelet's SIGKILL.
    persist: bool,
    /// Our processing list may hold something (a `BLMOVE` went out, or it held tasks at start):
    /// returning it at exit is worth waiting for Redis.
    may_hold: bool,
}

/// Completes when `rx` is true; never when its sender is gone.
async fn until_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Completes when the pod is ending; never when its sender is gone.
async fn until_ending(rx: &mut watch::Receiver<Option<Ending>>) {
    if rx.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn preview(payload: &[u8]) -> String {
    let s = String::from_utf8_lossy(&payload[..payload.len().min(60)]).into_owned();
    if payload.len() > 60 {
        format!("{s}… ({} bytes)", payload.len())
    } else {
        s
    }
}

enum Take {
    Got(Held),
    Nothing,
    Failed,
}

impl TaskLoop {
    /// Runs until drained or shut down; returns the exit code.
    pub async fn run(mut self) -> i32 {
        if !*self.pod_seen.borrow() {
            info!(
                "task mode: no task is taken before our pod has been read from the Kubernetes API"
            );
            tokio::select! {
                _ = until_true(&mut self.pod_seen) => {}
                _ = until_ending(&mut self.ending) => {
                    info!("shut down before our pod could be read: no task was taken");
                    return 0;
                }
                _ = until_true(&mut self.shutdown) => {
                    info!("shut down before our pod could be read: no task was taken");
                    return 0;
                }
            }
        }
        let keys = Consumer::new(&self.queue, &self.pod, self.format, self.group.as_deref());
        info!(
            "task mode: {} queue {:?}, {}, max retries {}",
            self.broker,
            self.queue,
            keys.holding(),
            self.max_retries
        );
        let mut s = State {
            l: self,
            keys,
            control: None,
            blocking: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            interrupted: None,
            persist: false,
            may_hold: false,
        };
        s.main_loop().await;
        s.persist = s.may_hold;
        s.return_leftovers().await;
        s.interrupted.unwrap_or(0)
    }
}

impl State {
    fn draining(&self) -> bool {
        *self.l.drain.borrow()
    }

    fn shutting_down(&self) -> bool {
        *self.l.shutdown.borrow() || self.l.ending.borrow().is_some()
    }

    fn stopping(&self) -> bool {
        self.draining() || self.shutting_down()
    }

    /// When waiting for Redis is over: when the task would be SIGKILLed (see [`Ending::kill_at`]).
    fn too_late(&self) -> Option<std::time::Instant> {
        self.l.ending.borrow().map(|e| e.kill_at())
    }

    /// Sleeps `d`; false when a shutdown came first (with `persist`: only SIGINT/SIGQUIT, or the
    /// kubelet's SIGKILL close).
    async fn pause(&mut self, d: Duration) -> bool {
        let late = self.too_late();
        let persist = self.persist;
        let (shutdown, ending) = (&mut self.l.shutdown, &mut self.l.ending);
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = until_true(&mut self.l.cold) => false,
            _ = ending::until(late) => false,
            _ = async { tokio::select! { _ = until_true(shutdown) => {}, _ = until_ending(ending) => {} } }, if !persist => false,
        }
    }

    /// Takes `item` off our processing list for good ([`queue::settle_timed`]), through a shutdown;
    /// `ran` (every run of it, retries included) goes to the queue's timings.
    async fn settle(&mut self, what: &str, item: &Held, how: Settle, ran: Duration) {
        let persist = std::mem::replace(&mut self.persist, true);
        let k = self.keys.clone();
        self.retry(what, |mut c| {
            let k = k.clone();
            async move { k.settle(&mut c, item, how, ran).await }
        })
        .await;
        self.persist = persist;
    }

    /// Runs `f` on the control connection until it succeeds; `None` when a shutdown made us give up.
    async fn retry<T, F, Fut>(&mut self, what: &str, f: F) -> Option<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        loop {
            let conn = match &self.control {
                Some(c) => c.clone(),
                None => match self.l.broker.connect(CONTROL_TIMEOUT).await {
                    Ok(c) => {
                        self.control = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        warn!("Redis unreachable ({what}): {e}; retrying");
                        let d = self.backoff.next_delay();
                        if !self.pause(d).await {
                            return None;
                        }
                        continue;
                    }
                },
            };
            match f(conn).await {
                Ok(v) => {
                    self.backoff.reset();
                    return Some(v);
                }
                Err(e) => {
                    warn!("Redis failed ({what}): {e}; retrying");
                    self.control = None;
                    let d = self.backoff.next_delay();
                    if !self.pause(d).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn main_loop(&mut self) {
        let k = self.keys.clone();
        let joined = self
            .retry("joining the queue's registry of consumers", |mut c| {
                let k = k.clone();
                async move { k.register(&mut c).await }
            })
            .await;
        if joined.is_none() {
            return;
        }
        let mut recover = true;
        loop {
            if self.stopping() {
                return;
            }
            if recover {
                let k = self.keys.clone();
                let Some(items) = self
                    .retry("reading our processing list", |mut c| {
                        let k = k.clone();
                        async move { k.held(&mut c).await }
                    })
                    .await
                else {
                    return;
                };
                if !items.is_empty() {
                    self.may_hold = true;
                    info!(
                        "{} task(s) left in our processing list: running them first",
                        items.len()
                    );
                }
                for item in items {
                    if self.stopping() {
                        return;
                    }
                    self.run_task(item).await;
                }
                recover = false;
                continue;
            }
            self.l.activity.send_replace(Some(Activity::Idle));
            match self.take().await {
                Take::Got(item) => {
                    if self.stopping() {
                        // Taken as the stop came: it goes back to the queue at exit.
                        return;
                    }
                    self.run_task(item).await;
                }
                Take::Nothing => {}
                Take::Failed => {
                    recover = true;
                    let d = self.backoff.next_delay();
                    if !self.pause(d).await {
                        return;
                    }
                }
            }
        }
    }

    /// One `BLMOVE`, woken early by a stop request.
    async fn take(&mut self) -> Take {
        if self.blocking.is_none() {
            let opened = async {
                let mut c = self
                    .l
                    .broker
                    .connect(BLMOVE_TIMEOUT + CONTROL_TIMEOUT)
                    .await?;
                let id = self.keys.client_id(&mut c).await?;
                Ok::<_, redis::RedisError>((c, id))
            };
            match opened.await {
                Ok(b) => {
                    self.backoff.reset();
                    self.blocking = Some(b);
                }
                Err(e) => {
                    warn!("Redis unreachable (taking a task): {e}; retrying");
                    return Take::Failed;
                }
            }
        }
        let Some((mut conn, id)) = self.blocking.clone() else {
            return Take::Failed;
        };
        self.may_hold = true;
        let k = self.keys.clone();
        let fut = async move { k.take(&mut conn, BLMOVE_TIMEOUT).await };
        tokio::pin!(fut);
        let early = {
            let (drain, shutdown, ending) =
                (&mut self.l.drain, &mut self.l.shutdown, &mut self.l.ending);
            tokio::select! {
                r = &mut fut => Some(r),
                _ = async { tokio::select! {
                    _ = until_true(drain) => {},
                    _ = until_true(shutdown) => {},
                    _ = until_ending(ending) => {},
                } } => None,
            }
        };
        let result = match early {
            Some(r) => r,
            None => {
                if let Some(mut c) = self.control.clone() {
                    let _ = self.keys.unblock(&mut c, id).await;
                }
                fut.await
            }
        };
        match result {
            Ok(Some(item)) => Take::Got(item),
            Ok(None) => Take::Nothing,
            Err(e) => {
                warn!("Redis failed (taking a task): {e}; reconnecting");
                self.blocking = None;
                Take::Failed
            }
        }
    }

    /// Waits for the next task notice from the init loop.
    async fn notice(&mut self) -> Option<Notice> {
        self.l.notices.recv().await
    }

    /// Waits for the running task to end. Once the pod is ending, shortly before the kubelet's
    /// SIGKILL, the task gets SIGTERM, then SIGKILL; `sent` says which went out.
    async fn task_end(&mut self, sent: &mut Option<Signal>) -> Option<Notice> {
        let mut open = true;
        loop {
            let next = match (*self.l.ending.borrow_and_update(), *sent) {
                (Some(e), None) => Some((e.term_at(), Signal::SIGTERM)),
                (Some(e), Some(Signal::SIGTERM)) => Some((e.kill_at(), Signal::SIGKILL)),
                _ => None,
            };
            tokio::select! {
                n = self.l.notices.recv() => return n,
                _ = ending::until(next.map(|n| n.0)) => {
                    if let Some((_, sig)) = next {
                        self.l.requester.send(Request::SignalTask(sig));
                        *sent = Some(sig);
                    }
                }
                r = self.l.ending.changed(), if open => open = r.is_ok(),
            }
        }
    }

    /// Runs one task to its end: done, dead-lettered, or left for later (interrupted or stopped
    /// between retries).
    async fn run_task(&mut self, item: Held) {
        let shown = preview(&item.payload);
        let began = std::time::Instant::now();
        loop {
            self.l.activity.send_replace(Some(Activity::Busy));
            info!("task {shown:?}: starting");
            self.l
                .requester
                .send(Request::SpawnTask(item.payload.clone()));
            let mut sent = None;
            let outcome = match self.notice().await {
                Some(Notice::TaskStarted(Ok(_))) => match self.task_end(&mut sent).await {
                    Some(Notice::TaskEnded(o)) => o,
                    other => {
                        error!("unexpected notice {other:?} while a task runs");
                        return;
                    }
                },
                Some(Notice::TaskStarted(Err(code))) => Outcome::Exited(code),
                other => {
                    error!("unexpected notice {other:?} when starting a task");
                    return;
                }
            };
            if outcome.success() {
                self.settle("acknowledging a task", &item, Settle::Done, began.elapsed())
                    .await;
                info!("task {shown:?}: done");
                return;
            }
            if let Some(sig) = sent {
                warn!(
                    "task {shown:?}: cut ({outcome:?}) after {sig} from us at the end of the pod's \
                     grace period; it goes back to the queue"
                );
                self.interrupted = Some(outcome.code());
                return;
            }
            if let (true, Outcome::Signaled(sig)) = (*self.l.cold.borrow(), outcome) {
                warn!("task {shown:?}: cut by signal {sig} during shutdown; it goes back to the queue");
                self.interrupted = Some(128 + sig);
                return;
            }
            let (k, it) = (self.keys.clone(), &item);
            let persist = std::mem::replace(&mut self.persist, true);
            let count = self
                .retry("counting a retry", |mut c| {
                    let k = k.clone();
                    async move { k.count_failed_run(&mut c, it).await }
                })
                .await;
            self.persist = persist;
            let Some(count) = count else {
                return;
            };
            if queue::past_retries(count, self.l.max_retries) {
                self.settle(
                    "dead-lettering a task",
                    &item,
                    Settle::DeadLetter,
                    began.elapsed(),
                )
                .await;
                error!(
                    "task {shown:?}: failed ({outcome:?}) after {} retries; moved to {:?}",
                    self.l.max_retries,
                    self.keys.dead()
                );
                return;
            }
            warn!(
                "task {shown:?}: failed ({outcome:?}); retry {count} of {}",
                self.l.max_retries
            );
            if self.stopping() {
                return;
            }
            let d = Duration::from_millis(100u64.saturating_mul(1 << count.clamp(0, 6)));
            if !self.pause(d).await {
                return;
            }
        }
    }

    /// Moves what is left in our processing list back to the queue's right end (taken next).
    async fn return_leftovers(&mut self) {
        self.l.activity.send_replace(None);
        loop {
            let k = self.keys.clone();
            let moved = self
                .retry("returning unfinished tasks to the queue", |mut c| {
                    let k = k.clone();
                    async move { k.give_back(&mut c).await }
                })
                .await;
            match moved {
                Some(Some(item)) => {
                    info!("task {:?}: returned to the queue", preview(item.as_bytes()))
                }
                Some(None) => break,
                None => {
                    warn!("could not return unfinished tasks; the operator returns a gone pod's processing list");
                    return;
                }
            }
        }
        // Nothing held: leave the registry (kept when a task came back meanwhile).
        let k = self.keys.clone();
        let left = self
            .retry("leaving the queue's registry of consumers", |mut c| {
                let k = k.clone();
                async move { k.unregister(&mut c).await }
            })
            .await;
        if left == Some(false) {
            warn!("our processing list is not empty: left in the registry for the operator");
        }
    }
}

/// The signals after which task mode takes no new task.
pub fn is_shutdown_signal(sig: Signal) -> bool {
    matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_short() {
        assert_eq!(preview(b"abc"), "abc");
        let long = vec![b'x'; 100];
        assert!(preview(&long).ends_with("(100 bytes)"));
        assert_eq!(preview(&[0xff, 0xfe]), "\u{fffd}\u{fffd}");
    }

    proptest::proptest! {
        #[test]
        fn preview_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let p = preview(&b);
            proptest::prop_assert!(p.chars().count() <= 80);
        }
    }

    #[test]
    fn shutdown_signals() {
        assert!(is_shutdown_signal(Signal::SIGTERM));
        assert!(is_shutdown_signal(Signal::SIGINT));
        assert!(!is_shutdown_signal(Signal::SIGUSR1));
        assert!(!is_shutdown_signal(Signal::SIGHUP));
    }
}
