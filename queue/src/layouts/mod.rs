//! How each queue format is measured: the commands ([`Probe`]s) whose answers make one queue's
//! [`Lengths`]. [`depth::read`](crate::depth::read) sends every probe of every queue in one pipeline,
//! so a format is only this: which keys to ask about and how to count each answer.
//!
//! One file per format; [`probes`] is the only dispatch.

mod bullmq;
mod celery;
mod list;
mod rq;
mod sidekiq;
mod stream;

use qscaler_crds::qworker::QueueFormat;
use redis::Value;

/// Tasks waiting and tasks taken but not finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lengths {
    pub queued: u64,
    pub in_flight: u64,
}

impl Lengths {
    pub fn plus(self, other: Lengths) -> Lengths {
        Lengths {
            queued: self.queued.saturating_add(other.queued),
            in_flight: self.in_flight.saturating_add(other.in_flight),
        }
    }
}

/// One queue to measure and the task-mode consumers whose processing lists count toward it.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    pub queue: &'a str,
    pub format: QueueFormat,
    /// [`crate::keys::consumer`] names.
    pub consumers: &'a [String],
    /// `stream` only: the consumer group (`None`: the default group).
    pub group: Option<&'a str>,
}

/// Which key of a queue a failure is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    Queue,
    InFlight,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Queue => "queue key",
            KeyRole::InFlight => "in-flight list",
        }
    }
}

/// One command of a queue's reading and how its answer counts.
#[derive(Clone, Debug)]
pub struct Probe {
    pub role: KeyRole,
    /// The key the command reads (named in errors, and `TYPE`d when Redis says WRONGTYPE).
    pub key: String,
    /// What the key should hold (a Redis `TYPE` answer: "list", "zset", "hash", "stream").
    pub expects: &'static str,
    pub cmd: redis::Cmd,
    /// The answer → what it adds to the queue's reading. Pure.
    pub count: fn(&Value) -> Result<Lengths, String>,
}

impl Probe {
    /// `LLEN key`, counted as queued or in flight by `role`.
    pub fn llen(role: KeyRole, key: String) -> Probe {
        let mut cmd = redis::cmd("LLEN");
        cmd.arg(&key);
        Probe::count(role, key, "list", cmd)
    }

    /// A command whose answer is one count (`ZCARD`, a script's total), counted as queued or in
    /// flight by `role`.
    pub fn count(role: KeyRole, key: String, expects: &'static str, cmd: redis::Cmd) -> Probe {
        Probe {
            role,
            key,
            expects,
            cmd,
            count: match role {
                KeyRole::Queue => |v| Ok(queued(integer(v)?)),
                KeyRole::InFlight => |v| Ok(in_flight(integer(v)?)),
            },
        }
    }
}

/// The probes of one queue, in the order their answers come back.
pub fn probes(q: &Query<'_>) -> Vec<Probe> {
    match q.format {
        QueueFormat::List => list::probes(q),
        QueueFormat::Rq => rq::probes(q),
        QueueFormat::Celery => celery::probes(q),
        QueueFormat::Sidekiq => sidekiq::probes(q),
        QueueFormat::Bullmq => bullmq::probes(q),
        QueueFormat::Stream => stream::probes(q),
    }
}

/// `n` tasks waiting.
pub fn queued(n: u64) -> Lengths {
    Lengths {
        queued: n,
        in_flight: 0,
    }
}

/// `n` tasks taken and not finished.
pub fn in_flight(n: u64) -> Lengths {
    Lengths {
        queued: 0,
        in_flight: n,
    }
}

/// A non-negative integer answer (`LLEN`, `ZCARD`, `HLEN`, a script's count); nil reads as 0.
pub fn integer(v: &Value) -> Result<u64, String> {
    match v {
        Value::Int(n) => u64::try_from(*n).map_err(|_| format!("negative count {n}")),
        Value::Nil => Ok(0),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| "not a count".to_string()),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// What the per-format tests share: a query of one format, the keys its probes read, and the
/// sum of the probes' counts over given answers.
#[cfg(test)]
mod testing {
    use super::*;

    pub fn query(queue: &str, format: QueueFormat) -> Query<'_> {
        Query {
            queue,
            format,
            consumers: &[],
            group: None,
        }
    }

    /// (role, key, expected type) of each probe, in order.
    pub fn keys(q: &Query<'_>) -> Vec<(KeyRole, String, &'static str)> {
        probes(q)
            .into_iter()
            .map(|p| (p.role, p.key, p.expects))
            .collect()
    }

    /// The probes' counts of `answers`, added up; the first error, if any.
    pub fn total(probes: &[Probe], answers: &[Value]) -> Result<Lengths, String> {
        assert_eq!(answers.len(), probes.len(), "one answer per probe");
        probes
            .iter()
            .zip(answers)
            .map(|(p, a)| (p.count)(a))
            .try_fold(Lengths::default(), |acc, l| l.map(|l| acc.plus(l)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_read_from_the_answers_redis_gives() {
        assert_eq!(integer(&Value::Int(7)), Ok(7));
        assert_eq!(integer(&Value::Nil), Ok(0));
        assert_eq!(integer(&Value::BulkString(b"12".to_vec())), Ok(12));
        assert!(integer(&Value::Int(-1)).is_err());
        assert!(integer(&Value::BulkString(b"x".to_vec())).is_err());
        assert!(integer(&Value::Array(vec![])).is_err());
    }

    #[test]
    fn an_llen_probe_counts_by_its_role() {
        let q = Probe::llen(KeyRole::Queue, "jobs".into());
        assert_eq!((q.count)(&Value::Int(3)), Ok(queued(3)));
        let f = Probe::llen(KeyRole::InFlight, "p".into());
        assert_eq!((f.count)(&Value::Int(2)), Ok(in_flight(2)));
        assert_eq!(
            queued(3).plus(in_flight(2)),
            Lengths {
                queued: 3,
                in_flight: 2
            }
        );
    }
}
