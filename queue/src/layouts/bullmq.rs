//! `bullmq`: BullMQ's layout (read from BullMQ 5's `queue-keys.js`, `pause-7.lua`, `getCounts-1.lua`).
//!
//! A queue `<name>` with prefix `<prefix>` (BullMQ's default `bull`) lives in `<prefix>:<name>:*`.
//! Queued: the list `:wait` and the sorted set `:prioritized`; in flight: the list `:active` (jobs a
//! worker has taken, at most its concurrency). Not backlog: `:delayed` (not due yet),
//! `:waiting-children` (blocked on other jobs) and a paused queue's jobs (pausing renames `:wait` to
//! `:paused` and sets `paused` in `:meta`; no worker takes them, so they ask for no pods).
//! The prefix: BullMQ refuses `:` in a queue name, so a QWorker's `queue: myapp:emails` is read as
//! prefix `myapp`, name `emails` (everything before the last `:` is the prefix).

use super::{KeyRole, Probe, Query};

/// BullMQ's default key prefix.
pub const DEFAULT_PREFIX: &str = "bull";

/// Counts waiting and prioritized jobs, or none while the queue is paused. KEYS: wait, prioritized, meta.
const WAITING: &str = r#"
if redis.call('HEXISTS', KEYS[3], 'paused') == 1 then return 0 end
return redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
"#;

/// `<prefix>:<name>` of a QWorker's `queue`.
pub fn qualified(queue: &str) -> String {
    if queue.contains(':') {
        queue.to_owned()
    } else {
        format!("{DEFAULT_PREFIX}:{queue}")
    }
}

pub(super) fn probes(q: &Query<'_>) -> Vec<Probe> {
    let base = qualified(q.queue);
    let wait = format!("{base}:wait");
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(WAITING)
        .arg(3)
        .arg(&wait)
        .arg(format!("{base}:prioritized"))
        .arg(format!("{base}:meta"));
    vec![
        Probe::count(KeyRole::Queue, wait, "list", cmd),
        Probe::llen(KeyRole::InFlight, format!("{base}:active")),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;
    use crate::layouts::queued;
    use crate::layouts::Lengths;
    use qscaler_crds::qworker::QueueFormat;
    use redis::Value;

    fn query(queue: &str) -> Query<'_> {
        testing::query(queue, QueueFormat::Bullmq)
    }

    fn args(p: &Probe) -> Vec<String> {
        p.cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            })
            .collect()
    }

    #[test]
    fn the_default_prefix_and_a_given_one() {
        assert_eq!(qualified("emails"), "bull:emails");
        assert_eq!(qualified("myapp:emails"), "myapp:emails");
        assert_eq!(qualified("{a:b}:emails"), "{a:b}:emails");
    }

    #[test]
    fn waiting_and_prioritized_are_queued_active_is_in_flight() {
        let ps = probes(&query("emails"));
        let got: Vec<_> = ps
            .iter()
            .map(|p| (p.role, p.key.as_str(), p.expects))
            .collect();
        assert_eq!(
            got,
            vec![
                (KeyRole::Queue, "bull:emails:wait", "list"),
                (KeyRole::InFlight, "bull:emails:active", "list"),
            ]
        );
        let a = args(&ps[0]);
        assert_eq!(a[0], "EVAL");
        assert_eq!(a[1], WAITING);
        assert_eq!(
            &a[2..],
            [
                "3",
                "bull:emails:wait",
                "bull:emails:prioritized",
                "bull:emails:meta"
            ]
        );
        assert_eq!(args(&ps[1]), ["LLEN", "bull:emails:active"]);
    }

    #[test]
    fn delayed_and_children_keys_are_never_read() {
        let ps = probes(&query("myapp:emails"));
        let all: Vec<String> = ps.iter().flat_map(args).collect();
        assert!(all.iter().any(|a| a == "myapp:emails:wait"));
        assert!(!all.iter().any(|a| a.ends_with(":delayed")
            || a.ends_with(":waiting-children")
            || a.ends_with(":paused")));
    }

    #[test]
    fn answers_count_as_queued_and_in_flight() {
        let ps = probes(&query("q"));
        let total = (ps[0].count)(&Value::Int(5))
            .unwrap()
            .plus((ps[1].count)(&Value::Int(3)).unwrap());
        assert_eq!(
            total,
            Lengths {
                queued: 5,
                in_flight: 3
            }
        );
        assert_eq!((ps[0].count)(&Value::Nil), Ok(queued(0)));
        assert!((ps[1].count)(&Value::BulkString(b"x".to_vec())).is_err());
    }
}
