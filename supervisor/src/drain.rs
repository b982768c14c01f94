//! Carrying out the operator's drain decision.
//!
//! The decision is the presence of the annotation `quickube.com/drain` on our own pod (its value is
//! the reason, for humans). In wrap mode the drain signal goes out once the annotation has stayed for
//! `--drain-debounce`; removing it earlier cancels the drain (after the signal, nothing can be
//! undone: the worker is already shutting down). In task mode the task loop reads the flag between
//! tasks, so removing the annotation while a task runs cancels the drain too.

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use qscaler_crds::names::ANNOTATION_DRAIN;
use tokio::sync::watch;
use tracing::info;

use crate::bridge::{Request, Requester};

/// Whether a pod with these annotations is asked to drain.
pub fn requested(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations.is_some_and(|a| a.contains_key(ANNOTATION_DRAIN))
}

/// Wrap mode: waits for a drain request that stays for `debounce`, then asks the init loop to send
/// `signal` to the worker, and after `timeout` (if any) to kill it. Returns early when an external
/// shutdown signal was forwarded already (a second SIGTERM would be a cold shutdown for Celery).
pub async fn wrap(
    mut drain: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    debounce: Duration,
    signal: Signal,
    timeout: Option<Duration>,
    requester: Requester,
) {
    loop {
        tokio::select! {
            r = drain.wait_for(|d| *d) => if r.is_err() { return },
            _ = shutdown.wait_for(|s| *s) => return,
        }
        info!("drain annotation seen; draining in {debounce:?} unless it is removed");
        let removed = tokio::select! {
            _ = tokio::time::sleep(debounce) => None,
            r = drain.wait_for(|d| !*d) => Some(r.is_ok()),
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let cancelled = removed.unwrap_or_else(|| !*drain.borrow());
        if cancelled {
            info!("drain annotation removed before the drain signal went out: drain cancelled");
            continue;
        }
        requester.send(Request::DrainSignal(signal));
        if let Some(t) = timeout {
            tokio::time::sleep(t).await;
            requester.send(Request::KillWorker);
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_is_the_request() {
        let mut a = BTreeMap::new();
        assert!(!requested(None));
        assert!(!requested(Some(&a)));
        a.insert("quickube.com/usage-worker".into(), "{}".into());
        assert!(!requested(Some(&a)));
        a.insert(ANNOTATION_DRAIN.into(), "scale-down".into());
        assert!(requested(Some(&a)));
        a.insert(ANNOTATION_DRAIN.into(), String::new());
        assert!(requested(Some(&a)));
    }
}
