//! Whether a reconcile's QWorker status is worth a PATCH (issue 17.5: the API server's bill). At
//! 200 QWorkers a status write per depth change kept the API server queueing and reconciles slow.
//!
//! - A status identical to the last one written (or to the cached one) is not written: the cache
//!   lags our own writes, so comparing with it alone wrote the same status again.
//! - A change of the queue depth, in-flight count or learned task time alone (nothing else a user
//!   sees) is written at most every [`DEPTH_REFRESH`]; the reconcile requeues itself for the rest
//!   of the wait, so the last depth is shown in the end.
//! - Any other change (desired, current, conditions, peaks) is written at once: reactions are not
//!   slowed.

use std::time::{Duration, Instant};

use qscaler_crds::QWorkerStatus;

/// The least time between two status writes whose only news is the queue depth or in-flight count.
pub(crate) const DEPTH_REFRESH: Duration = Duration::from_secs(10);

/// The last status this operator wrote for a QWorker, and when.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Written {
    pub status: QWorkerStatus,
    pub at: Instant,
}

/// What to do with a computed status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusWrite {
    Write,
    /// Nothing changed.
    Skip,
    /// Only the depth changed and the last write is recent: try again after this long.
    Defer(Duration),
}

/// `new` against what the API server holds: `last` (our last successful write) and `cached` (the
/// informer's copy, `None` while the object has no status).
pub(crate) fn status_write(
    cached: Option<&QWorkerStatus>,
    last: Option<&Written>,
    new: &QWorkerStatus,
    now: Instant,
) -> StatusWrite {
    let Some(cached) = cached else {
        return StatusWrite::Write;
    };
    if cached == new || last.is_some_and(|w| &w.status == new) {
        return StatusWrite::Skip;
    }
    let Some(last) = last else {
        // No time of the last write (a restart): write, and count from now.
        return StatusWrite::Write;
    };
    if !depth_only(&last.status, new) {
        return StatusWrite::Write;
    }
    let age = now.saturating_duration_since(last.at);
    if age >= DEPTH_REFRESH {
        StatusWrite::Write
    } else {
        StatusWrite::Defer(DEPTH_REFRESH - age)
    }
}

/// Whether `a` and `b` differ in the queue depth or in-flight count only.
fn depth_only(a: &QWorkerStatus, b: &QWorkerStatus) -> bool {
    let mut a = a.clone();
    a.queue_depth = b.queue_depth;
    a.in_flight = b.in_flight;
    // The learned seconds per task move with every task: shown at the depth's pace.
    a.task_seconds = b.task_seconds;
    &a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(desired: i32, depth: i64) -> QWorkerStatus {
        QWorkerStatus {
            desired_replicas: desired,
            queue_depth: Some(depth),
            in_flight: Some(0),
            ..Default::default()
        }
    }

    #[test]
    fn an_object_without_status_is_written() {
        let t0 = Instant::now();
        assert_eq!(
            status_write(None, None, &status(1, 0), t0),
            StatusWrite::Write
        );
    }

    #[test]
    fn the_same_status_is_not_written_again_while_the_cache_lags() {
        let t0 = Instant::now();
        let cached = status(1, 0);
        let last = Written {
            status: status(2, 5),
            at: t0,
        };
        // The cache still shows the old status; our last write already says this.
        assert_eq!(
            status_write(Some(&cached), Some(&last), &status(2, 5), t0),
            StatusWrite::Skip
        );
        assert_eq!(
            status_write(Some(&cached), None, &cached.clone(), t0),
            StatusWrite::Skip
        );
    }

    #[test]
    fn a_depth_only_change_waits_for_the_refresh_and_others_do_not() {
        let t0 = Instant::now();
        let last = Written {
            status: status(2, 5),
            at: t0,
        };
        let cached = last.status.clone();
        let soon = t0 + Duration::from_secs(3);
        assert_eq!(
            status_write(Some(&cached), Some(&last), &status(2, 6), soon),
            StatusWrite::Defer(DEPTH_REFRESH - Duration::from_secs(3))
        );
        assert_eq!(
            status_write(
                Some(&cached),
                Some(&last),
                &status(2, 6),
                t0 + DEPTH_REFRESH
            ),
            StatusWrite::Write
        );
        let mut learned = status(2, 6);
        learned.task_seconds = Some(1.2);
        assert_eq!(
            status_write(Some(&cached), Some(&last), &learned, soon),
            StatusWrite::Defer(DEPTH_REFRESH - Duration::from_secs(3)),
            "a learned task time waits as the depth does"
        );
        // A change a reaction shows (desired) is written at once.
        assert_eq!(
            status_write(Some(&cached), Some(&last), &status(3, 6), soon),
            StatusWrite::Write
        );
        let mut in_flight = status(2, 5);
        in_flight.in_flight = Some(1);
        assert!(matches!(
            status_write(Some(&cached), Some(&last), &in_flight, soon),
            StatusWrite::Defer(_)
        ));
    }

    #[test]
    fn without_a_known_last_write_a_change_is_written() {
        let t0 = Instant::now();
        assert_eq!(
            status_write(Some(&status(2, 5)), None, &status(2, 6), t0),
            StatusWrite::Write
        );
    }
}
