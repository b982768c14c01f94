//! What queues hold, read in one pipeline: `LLEN` of each queue and of each of its consumers'
//! processing lists (tasks taken but not finished count toward the backlog), and which consumers
//! of a namespace hold a processing list at all.

use redis::aio::MultiplexedConnection;
use redis::RedisResult;

use crate::keys;

/// One queue to measure and the consumers whose processing lists count toward it.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    pub queue: &'a str,
    /// [`keys::consumer`] names.
    pub consumers: &'a [String],
}

/// Tasks waiting and tasks taken but not finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lengths {
    pub queued: u64,
    pub in_flight: u64,
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

/// A key of a queue that Redis refused to read while it answered for the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedKey {
    pub role: KeyRole,
    pub key: String,
    pub error: String,
    /// What the key holds (Redis `TYPE`) when it is not a list.
    pub holds: Option<String>,
}

/// The `LLEN` answers of a pipeline, in query order (each queue's own key, then each consumer's
/// processing list), folded into one reading per queue; the first key of a queue that failed makes
/// that queue's answer. Pure.
pub fn fold_lengths(
    queries: &[Query<'_>],
    lens: impl IntoIterator<Item = Result<u64, String>>,
) -> Vec<Result<Lengths, FailedKey>> {
    let mut it = lens.into_iter();
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let mut failed = None;
        let mut note = |role: KeyRole, key: String, r: Option<Result<u64, String>>| match r {
            Some(Ok(n)) => n,
            Some(Err(error)) => {
                failed.get_or_insert(FailedKey {
                    role,
                    key,
                    error,
                    holds: None,
                });
                0
            }
            None => 0,
        };
        let queued = note(KeyRole::Queue, q.queue.to_owned(), it.next());
        let mut in_flight = 0u64;
        for consumer in q.consumers {
            let key = keys::processing(q.queue, consumer);
            in_flight = in_flight.saturating_add(note(KeyRole::InFlight, key, it.next()));
        }
        out.push(match failed {
            Some(f) => Err(f),
            None => Ok(Lengths { queued, in_flight }),
        });
    }
    out
}

/// Reads every queue in one pipeline. The outer error is the broker's (nothing was read); an inner
/// one is one queue's own (e.g. its key holds a string), with what the key holds.
pub async fn read(
    c: &mut MultiplexedConnection,
    queries: &[Query<'_>],
) -> RedisResult<Vec<Result<Lengths, FailedKey>>> {
    if queries.is_empty() {
        return Ok(vec![]);
    }
    let mut pipe = redis::pipe();
    // One key's error (WRONGTYPE) is that key's answer, not the whole pipeline's.
    pipe.ignore_errors();
    for q in queries {
        pipe.cmd("LLEN").arg(q.queue);
        for consumer in q.consumers {
            pipe.cmd("LLEN").arg(keys::processing(q.queue, consumer));
        }
    }
    let lens: Vec<RedisResult<u64>> = pipe.query_async(c).await?;
    let mut out = fold_lengths(
        queries,
        lens.into_iter().map(|r| r.map_err(|e| e.to_string())),
    );
    for failed in out.iter_mut().filter_map(|r| r.as_mut().err()) {
        if failed.error.contains("WRONGTYPE") {
            failed.holds = Some(redis::cmd("TYPE").arg(&failed.key).query_async(c).await?);
        }
    }
    Ok(out)
}

/// The pods of `namespace` that hold a processing list of `queue` (to find lists of pods that
/// vanished while nobody looked).
pub async fn holders(
    c: &mut MultiplexedConnection,
    queue: &str,
    namespace: &str,
) -> RedisResult<Vec<String>> {
    let prefix = keys::processing(queue, &keys::consumer(Some(namespace), ""));
    let pattern = format!("{}*", glob_escape(&prefix));
    let mut cursor: u64 = 0;
    let mut found = vec![];
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(c)
            .await?;
        found.extend(
            batch
                .into_iter()
                .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
                .filter(|p| !p.is_empty()),
        );
        cursor = next;
        if cursor == 0 {
            return Ok(found);
        }
    }
}

/// Escapes Redis glob characters so a queue name is matched literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failed_key_fails_only_its_queue() {
        let consumers: Vec<Vec<String>> = [&["ns/a-1", "ns/a-2"][..], &["ns/b-1"], &[]]
            .iter()
            .map(|cs| cs.iter().map(|c| c.to_string()).collect())
            .collect();
        let queries: Vec<Query> = ["a", "bad", "c"]
            .iter()
            .zip(&consumers)
            .map(|(queue, consumers)| Query { queue, consumers })
            .collect();
        let wrong = || Err("WRONGTYPE Operation against a key".to_string());
        let folded = fold_lengths(&queries, [Ok(3), Ok(1), Ok(2), wrong(), Ok(5), Ok(7)]);
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
        let folded = fold_lengths(&queries[..1], [Ok(3), wrong(), Ok(1)]);
        assert_eq!(
            folded[0].as_ref().map_err(|f| (f.role, f.key.as_str())),
            Err((KeyRole::InFlight, "a:processing:ns/a-1"))
        );
        // Fewer answers than keys (cannot happen with Redis) read as empty, not as a panic.
        assert_eq!(
            fold_lengths(&queries[2..], []),
            vec![Ok(Lengths::default())]
        );
    }

    #[test]
    fn glob_escape_makes_names_literal() {
        assert_eq!(glob_escape("jobs"), "jobs");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
