//! What queues hold, read in one pipeline: every [`Probe`] of every queue (its format's keys, and
//! in task mode its consumers' processing lists: tasks taken but not finished count toward the
//! backlog), and which consumers of a namespace hold a processing list at all.

use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};

use crate::keys;
use crate::layouts;
pub use crate::layouts::{KeyRole, Lengths, Probe, Query};

/// A key of a queue that Redis refused to read while it answered for the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedKey {
    pub role: KeyRole,
    pub key: String,
    pub error: String,
    /// What the key holds (Redis `TYPE`) when it is not what the format expects.
    pub holds: Option<String>,
    /// What the format expects the key to hold.
    pub expects: &'static str,
}

/// The answers of a pipeline, in probe order, folded into one reading per queue; the first probe
/// of a queue that failed makes that queue's answer. Pure.
pub fn fold(
    probes: &[Vec<Probe>],
    answers: impl IntoIterator<Item = Result<Value, String>>,
) -> Vec<Result<Lengths, FailedKey>> {
    let mut it = answers.into_iter();
    probes
        .iter()
        .map(|queue| {
            let mut failed = None;
            let mut total = Lengths::default();
            for p in queue {
                let counted = match it.next() {
                    Some(Ok(v)) => (p.count)(&v),
                    Some(Err(e)) => Err(e),
                    // Fewer answers than probes (cannot happen with Redis) read as empty.
                    None => Ok(Lengths::default()),
                };
                match counted {
                    Ok(l) => total = total.plus(l),
                    Err(error) => {
                        failed.get_or_insert(FailedKey {
                            role: p.role,
                            key: p.key.clone(),
                            error,
                            holds: None,
                            expects: p.expects,
                        });
                    }
                }
            }
            match failed {
                Some(f) => Err(f),
                None => Ok(total),
            }
        })
        .collect()
}

/// Reads every queue in one pipeline. The outer error is the broker's (nothing was read); an inner
/// one is one queue's own (e.g. its key holds a string), with what the key holds.
pub async fn read<C: ConnectionLike>(
    c: &mut C,
    queries: &[Query<'_>],
) -> RedisResult<Vec<Result<Lengths, FailedKey>>> {
    Ok(read_timed(c, queries)
        .await?
        .into_iter()
        .map(|(l, _)| l)
        .collect())
}

/// A queue's task timings ([`keys::task_stats`]): tasks settled, and the milliseconds their runs
/// took, since the hash was created. Counters: the reader learns from their growth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub tasks: u64,
    pub millis: u64,
}

/// [`read`], with each queue's [`Tally`] read in the same pipeline (`None`: no task was timed, or
/// the hash is unreadable; timings never fail a queue's reading).
pub async fn read_timed<C: ConnectionLike>(
    c: &mut C,
    queries: &[Query<'_>],
) -> RedisResult<Vec<(Result<Lengths, FailedKey>, Option<Tally>)>> {
    if queries.is_empty() {
        return Ok(vec![]);
    }
    let probes: Vec<Vec<Probe>> = queries.iter().map(layouts::probes).collect();
    let mut pipe = redis::pipe();
    // One key's error (WRONGTYPE) is that key's answer, not the whole pipeline's.
    pipe.ignore_errors();
    for p in probes.iter().flatten() {
        pipe.add_command(p.cmd.clone());
    }
    for q in queries {
        pipe.cmd("HMGET")
            .arg(keys::task_stats(q.queue))
            .arg(keys::STATS_TASKS)
            .arg(keys::STATS_MILLIS);
    }
    let mut answers: Vec<RedisResult<Value>> = pipe.query_async(c).await?;
    let timings = answers.split_off(answers.len().saturating_sub(queries.len()));
    let mut out = fold(
        &probes,
        answers.into_iter().map(|r| r.map_err(|e| e.to_string())),
    );
    for failed in out.iter_mut().filter_map(|r| r.as_mut().err()) {
        if failed.error.contains("WRONGTYPE") {
            failed.holds = Some(redis::cmd("TYPE").arg(&failed.key).query_async(c).await?);
        }
    }
    Ok(out
        .into_iter()
        .zip(timings.iter().map(|t| t.as_ref().ok().and_then(tally)))
        .collect())
}

/// An `HMGET tasks ms` answer as a [`Tally`]; `None` when nothing was timed or it is not two counts.
/// Pure.
pub fn tally(v: &Value) -> Option<Tally> {
    let Value::Array(fields) = v else {
        return None;
    };
    let [tasks, millis] = fields.as_slice() else {
        return None;
    };
    if *tasks == Value::Nil {
        return None;
    }
    Some(Tally {
        tasks: layouts::integer(tasks).ok()?,
        millis: layouts::integer(millis).ok()?,
    })
}

/// The pods of `namespace` that may hold a processing list of `queue` (to find lists of pods
/// that vanished while nobody looked): the queue's registry of consumers ([`keys::consumers`]),
/// one `SMEMBERS` in the queue's own slot, never a `SCAN` of every node.
pub async fn holders<C: ConnectionLike>(
    c: &mut C,
    queue: &str,
    namespace: &str,
) -> RedisResult<Vec<String>> {
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::consumers(queue))
        .query_async(c)
        .await?;
    Ok(in_namespace(members, namespace))
}

/// The pod names of the registry's consumers that belong to `namespace`. Pure.
fn in_namespace(members: Vec<String>, namespace: &str) -> Vec<String> {
    let prefix = keys::consumer(Some(namespace), "");
    let mut pods: Vec<String> = members
        .into_iter()
        .filter_map(|m| m.strip_prefix(&prefix).map(str::to_owned))
        .filter(|p| !p.is_empty())
        .collect();
    pods.sort();
    pods
}

#[cfg(test)]
mod tests {
    use super::*;
    use qscaler_crds::qworker::QueueFormat;

    #[test]
    fn one_failed_key_fails_only_its_queue() {
        let consumers: Vec<Vec<String>> = [&["ns/a-1", "ns/a-2"][..], &["ns/b-1"], &[]]
            .iter()
            .map(|cs| cs.iter().map(|c| c.to_string()).collect())
            .collect();
        let queries: Vec<Query> = ["a", "bad", "c"]
            .iter()
            .zip(&consumers)
            .map(|(queue, consumers)| Query {
                queue,
                format: QueueFormat::List,
                consumers,
                group: None,
            })
            .collect();
        let probes: Vec<Vec<Probe>> = queries.iter().map(layouts::probes).collect();
        let n = |n| Ok(Value::Int(n));
        let wrong = || Err("WRONGTYPE Operation against a key".to_string());
        let folded = fold(&probes, [n(3), n(1), n(2), wrong(), n(5), n(7)]);
        assert_eq!(
            folded[0],
            Ok(Lengths {
                queued: 3,
                in_flight: 3
            })
        );
        assert_eq!(
            folded[1].as_ref().map_err(|f| (f.role, f.key.as_str())),
            Err((KeyRole::Queue, "bad"))
        );
        assert_eq!(
            folded[2],
            Ok(Lengths {
                queued: 7,
                in_flight: 0
            })
        );
        // A processing list of the wrong type is named as such.
        let folded = fold(&probes[..1], [n(3), wrong(), n(1)]);
        assert_eq!(
            folded[0].as_ref().map_err(|f| (f.role, f.key.as_str())),
            Err((KeyRole::InFlight, keys::processing("a", "ns/a-1").as_str()))
        );
        // An answer the format cannot count fails its queue too.
        let folded = fold(&probes[2..], [Ok(Value::Array(vec![]))]);
        assert!(folded[0].is_err());
        // Fewer answers than keys (cannot happen with Redis) read as empty, not as a panic.
        assert_eq!(fold(&probes[2..], []), vec![Ok(Lengths::default())]);
    }

    #[test]
    fn timings_read_from_hmget_answers() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(
            tally(&Value::Array(vec![bulk("3"), bulk("4500")])),
            Some(Tally {
                tasks: 3,
                millis: 4500
            })
        );
        assert_eq!(
            tally(&Value::Array(vec![bulk("3"), Value::Nil])),
            Some(Tally {
                tasks: 3,
                millis: 0
            })
        );
        assert_eq!(tally(&Value::Array(vec![Value::Nil, Value::Nil])), None);
        assert_eq!(tally(&Value::Array(vec![bulk("x"), bulk("1")])), None);
        assert_eq!(tally(&Value::Array(vec![bulk("1")])), None);
        assert_eq!(tally(&Value::Int(1)), None);
    }

    #[test]
    fn holders_are_the_registrys_consumers_of_the_namespace() {
        let members = ["ns/w-2", "ns/w-1", "other/w-3", "ns/", "bare", "ns2/w-4"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(in_namespace(members, "ns"), vec!["w-1", "w-2"]);
        assert!(in_namespace(vec![], "ns").is_empty());
    }
}
