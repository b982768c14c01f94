//! `celery`: Celery's queues on kombu's Redis transport (read from kombu 5.x `transport/redis.py`,
//! default transport options: no `global_keyprefix`, priority steps within 0–9).
//!
//! - queued: the list `<name>` (priority 0) and its priority lists `<name>\x06\x16<p>`, one per
//!   priority step; the steps are configurable (default 0, 3, 6, 9), so every p in 1..=9 is read
//!   (an `LLEN` of a missing key is 0);
//! - in flight: the entries of the `unacked` hash (delivery tag → JSON `[message, exchange,
//!   routing key]`) routed to `<name>`. The hash holds what every Celery worker of that Redis
//!   database has prefetched (and, with `task_acks_late`, is running), for all queues, so a small
//!   Lua script counts the entries whose routing key is the queue's name (Celery's own rule for a
//!   queue it declares: exchange and routing key named as the queue). Cost: one `HVALS` and a JSON
//!   decode per entry, O(all unacked messages of the database, and their size) per poll; that is
//!   at most every worker's concurrency × prefetch multiplier. Messages of a queue bound under
//!   another routing key are not seen.

use super::{KeyRole, Probe, Query};

/// kombu's `Channel.sep`, between a queue's name and its priority.
const PRIORITY_SEP: &str = "\x06\x16";

/// kombu's `Channel.unacked_key`.
const UNACKED: &str = "unacked";

/// Counts the entries of the unacked hash (KEYS[1]) whose routing key is ARGV[1].
const COUNT_UNACKED: &str = r#"
local n = 0
local entries = redis.call('HVALS', KEYS[1])
for i = 1, #entries do
  local ok, e = pcall(cjson.decode, entries[i])
  if ok and type(e) == 'table' and e[3] == ARGV[1] then n = n + 1 end
end
return n
"#;

pub(super) fn probes(q: &Query<'_>) -> Vec<Probe> {
    // The queue lists before the hash a message moves to: one that moves between the reads counts
    // twice, never not at all.
    std::iter::once(Probe::llen(KeyRole::Queue, q.queue.to_owned()))
        .chain((1..=9).map(|p| Probe::llen(KeyRole::Queue, priority_list(q.queue, p))))
        .chain(std::iter::once(unacked(q.queue)))
        .collect()
}

/// The list kombu keeps a queue's messages of priority step `p` (> 0) in.
fn priority_list(queue: &str, p: u8) -> String {
    format!("{queue}{PRIORITY_SEP}{p}")
}

fn unacked(queue: &str) -> Probe {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(COUNT_UNACKED).arg(1).arg(UNACKED).arg(queue);
    Probe::count(KeyRole::InFlight, UNACKED.to_string(), "hash", cmd)
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::super::{queued, Lengths};
    use super::*;
    use qscaler_crds::qworker::QueueFormat;
    use redis::Value;

    fn query(queue: &str) -> Query<'_> {
        testing::query(queue, QueueFormat::Celery)
    }

    #[test]
    fn reads_every_priority_list_then_the_unacked_hash() {
        let got = testing::keys(&query("emails"));
        let mut want = vec![(KeyRole::Queue, "emails".to_string(), "list")];
        for p in 1..=9 {
            want.push((KeyRole::Queue, format!("emails\x06\x16{p}"), "list"));
        }
        want.push((KeyRole::InFlight, "unacked".to_string(), "hash"));
        assert_eq!(got, want);
    }

    #[test]
    fn the_unacked_count_is_asked_for_this_queue_only() {
        let ps = probes(&query("emails"));
        let last = ps.last().map(|p| p.cmd.get_packed_command());
        let want = redis::cmd("EVAL")
            .arg(COUNT_UNACKED)
            .arg(1)
            .arg("unacked")
            .arg("emails")
            .get_packed_command();
        assert_eq!(last, Some(want));
    }

    #[test]
    fn queued_and_unacked_add_up() {
        // 5 at priority 0, 2 at step 3, 1 at step 9, 3 unacked of this queue (the script's count).
        let ps = probes(&query("q"));
        let mut answers = vec![Value::Int(5), Value::Nil, Value::Nil, Value::Int(2)];
        answers.extend(std::iter::repeat_n(Value::Int(0), 5));
        answers.push(Value::Int(1));
        answers.push(Value::Int(3));
        assert_eq!(answers.len(), ps.len());
        let total = testing::total(&ps, &answers);
        assert_eq!(
            total,
            Ok(Lengths {
                queued: 8,
                in_flight: 3
            })
        );
        assert_eq!((ps[0].count)(&Value::Int(0)), Ok(queued(0)));
        assert!((ps[10].count)(&Value::Int(-1)).is_err());
    }
}
