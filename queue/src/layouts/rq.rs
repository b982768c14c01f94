//! `rq`: RQ's own layout (read from rq 3.0's `queue.py`, `intermediate_queue.py`, `registry.py`;
//! the same keys since RQ 1.16, with the default `RQ_KEY_PREFIX` `rq`).
//!
//! - queued: the list `rq:queue:<name>` of job ids;
//! - in flight: `rq:queue:<name>:intermediate`, where a worker `BLMOVE`s a job id before it starts
//!   it, and the started registry `rq:wip:<name>` (a ZSET of `<job id>:<execution id>`), which the
//!   worker fills and empties of that intermediate entry in one MULTI, so no job counts twice.
//!
//! An entry a killed worker left in `rq:wip:` counts until a worker's maintenance retries or fails
//! it: the backlog keeps a worker to do that.
//!
//! Scheduled (`rq:scheduled:`) and deferred (`rq:deferred:`, waiting on dependencies) jobs are not
//! backlog: no worker can run them yet.

use super::{KeyRole, Probe, Query};

pub(super) fn probes(q: &Query<'_>) -> Vec<Probe> {
    let list = format!("rq:queue:{}", q.queue);
    // In the order a job moves: one that moves between two reads counts twice, never not at all.
    vec![
        Probe::llen(KeyRole::Queue, list.clone()),
        Probe::llen(KeyRole::InFlight, format!("{list}:intermediate")),
        started(format!("rq:wip:{}", q.queue)),
    ]
}

/// `ZCARD` of the started registry.
fn started(key: String) -> Probe {
    let mut cmd = redis::cmd("ZCARD");
    cmd.arg(&key);
    Probe::count(KeyRole::InFlight, key, "zset", cmd)
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::super::{in_flight, queued, Lengths};
    use super::*;
    use qscaler_crds::qworker::QueueFormat;
    use redis::Value;

    fn query(queue: &str) -> Query<'_> {
        testing::query(queue, QueueFormat::Rq)
    }

    #[test]
    fn reads_the_queue_its_intermediate_list_and_its_started_registry() {
        let got = testing::keys(&query("emails"));
        assert_eq!(
            got,
            vec![
                (KeyRole::Queue, "rq:queue:emails".to_string(), "list"),
                (
                    KeyRole::InFlight,
                    "rq:queue:emails:intermediate".to_string(),
                    "list"
                ),
                (KeyRole::InFlight, "rq:wip:emails".to_string(), "zset"),
            ]
        );
    }

    #[test]
    fn queued_jobs_and_taken_jobs_add_up() {
        // LLEN 4 queued, LLEN 1 moved but not started, ZCARD 2 started; a missing key is nil or 0.
        let ps = probes(&query("q"));
        let answers = [Value::Int(4), Value::Int(1), Value::Int(2)];
        let total = testing::total(&ps, &answers);
        assert_eq!(
            total,
            Ok(Lengths {
                queued: 4,
                in_flight: 3
            })
        );
        assert_eq!((ps[2].count)(&Value::Nil), Ok(in_flight(0)));
        assert_eq!((ps[0].count)(&Value::Int(0)), Ok(queued(0)));
        assert!((ps[2].count)(&Value::Array(vec![])).is_err());
    }

    #[test]
    fn the_zcard_names_its_key() {
        let p = started("rq:wip:a".into());
        assert_eq!(
            p.cmd.get_packed_command(),
            redis::cmd("ZCARD").arg("rq:wip:a").get_packed_command()
        );
    }
}
