//! Task mode on a Redis stream (`format: stream`): the Streams form of [`crate::task`]. An entry is
//! always in exactly one place: not yet delivered to the group, pending for one consumer (ours, a
//! dead pod's, or the group's pool of returned entries, [`RETURNED_CONSUMER`]), or acknowledged
//! (done, or copied to the dead-letter stream in the same step).
//!
//! * group: created at `0` with `MKSTREAM` when missing (so entries already there are delivered);
//! * take: first one entry of the pool (claimed to us with `XCLAIM`, in one script), else
//!   `XREADGROUP ... COUNT 1 BLOCK ... STREAMS <stream> >`;
//! * done: `XACK`, `HDEL` of its retry count and the run's time ([`crate::keys::task_stats`]), in
//!   one `MULTI`;
//! * failed run: `HINCRBY <retries> <entry id>`; past `max_retries` the entry is dead-lettered:
//!   `XADD <dead> * task <payload> id <id> group <group>` + `XACK` + `HDEL` in one `MULTI`;
//! * give back (drain or cut, no retry counted): our oldest pending entry is `XCLAIM`ed to the pool,
//!   where the next take of any consumer finds it; nothing is re-added, so other groups of the
//!   stream never see it twice;
//! * return (the operator, for a consumer that died): each of its pending entries, in every group,
//!   counts a failed run and is `XCLAIM`ed to the pool, or dead-lettered past `max_retries`, one
//!   script run per entry. Not `XAUTOCLAIM`: that claims by idle time, whoever holds the entry, and
//!   would take a long task from a live consumer; the operator knows which consumer is dead.
//!
//! The payload is the entry's [`PAYLOAD_FIELD`] field; an entry without one is dead-lettered at
//! once (it cannot be run). Retry counts are keyed by entry id (unlike lists, identical payloads
//! do not share a count). The consumer is in the queue's registry ([`crate::keys::consumers`])
//! while it may hold pending entries, as with lists, so the operator finds a vanished pod's.

use std::time::Duration;

use qscaler_crds::names::stream::{DEFAULT_GROUP, PAYLOAD_FIELD};
use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};

use crate::keys;
use crate::task::{Returned, Settle};

/// The consumer that holds returned entries until a live consumer claims them. No pod's consumer
/// name can be this (pod names have no `:`).
pub const RETURNED_CONSUMER: &str = "qscaler:returned";

/// One consumer's view of a stream queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamKeys {
    pub stream: String,
    pub group: String,
    /// This consumer, as the group and the registry name it ([`keys::consumer`]).
    pub consumer: String,
    /// Failed runs per entry id.
    pub retries: String,
    /// The dead-letter stream.
    pub dead: String,
    /// The queue's registry of consumers that may hold pending entries.
    pub registry: String,
}

impl StreamKeys {
    /// `group`: `None` is the default group.
    pub fn new(stream: &str, group: Option<&str>, consumer: &str) -> StreamKeys {
        StreamKeys {
            stream: stream.to_owned(),
            group: group.unwrap_or(DEFAULT_GROUP).to_owned(),
            consumer: consumer.to_owned(),
            retries: keys::retries(stream),
            dead: keys::dead_letter(stream),
            registry: keys::consumers(stream),
        }
    }
}

/// A delivered entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    /// Its [`PAYLOAD_FIELD`]; `None`: the entry has no such field (or was deleted since).
    pub payload: Option<Vec<u8>>,
}

/// Creates the group at the stream's start (and the stream) unless it exists.
pub async fn ensure_group<C: ConnectionLike>(c: &mut C, k: &StreamKeys) -> RedisResult<()> {
    let created: RedisResult<String> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&k.stream)
        .arg(&k.group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(c)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Enters this consumer in the queue's registry, before its first take.
pub async fn register<C: ConnectionLike>(c: &mut C, k: &StreamKeys) -> RedisResult<()> {
    crate::task::enter_registry(c, &k.registry, &k.consumer).await
}

/// Claims the pool's oldest entry to ARGV[2] in group ARGV[1] of stream KEYS[1]; the `XCLAIM`
/// answer (empty when the pool is empty, or its entry was deleted: `XCLAIM` drops it then).
const CLAIM_RETURNED: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[3])
if #p == 0 then return {} end
return redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, p[1][1])
";

/// One entry of the pool of returned entries, now ours; `None` when the pool is empty.
pub async fn take_returned<C: ConnectionLike>(
    c: &mut C,
    k: &StreamKeys,
) -> RedisResult<Option<Entry>> {
    let v: Value = redis::cmd("EVAL")
        .arg(CLAIM_RETURNED)
        .arg(1)
        .arg(&k.stream)
        .arg(&k.group)
        .arg(&k.consumer)
        .arg(RETURNED_CONSUMER)
        .query_async(c)
        .await?;
    Ok(entries(&v).into_iter().next())
}

/// One blocking read of a new entry: `None` when `block` passed with nothing new. Run it on a
/// connection of its own whose response timeout is above `block` ([`crate::task::unblock`] wakes
/// it early, as it does a list's take).
pub async fn take_new<C: ConnectionLike>(
    c: &mut C,
    k: &StreamKeys,
    block: Duration,
) -> RedisResult<Option<Entry>> {
    let v: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&k.group)
        .arg(&k.consumer)
        .arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1))
        .arg("STREAMS")
        .arg(&k.stream)
        .arg(">")
        .query_async(c)
        .await?;
    Ok(read_answer(&v).into_iter().next())
}

/// What this consumer holds (a restarted container, a read whose reply was lost), oldest first.
pub async fn held<C: ConnectionLike>(c: &mut C, k: &StreamKeys) -> RedisResult<Vec<Entry>> {
    let v: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&k.group)
        .arg(&k.consumer)
        .arg("STREAMS")
        .arg(&k.stream)
        .arg("0")
        .query_async(c)
        .await?;
    Ok(read_answer(&v))
}

/// Acknowledges `e` for good and forgets its retry count, in one `MULTI`; a dead-lettered one is
/// copied to the dead-letter stream in the same step. When `ran` is known, the run goes to the
/// queue's timings ([`keys::task_stats`], under the stream's hash tag) in the same step, as a
/// list task's does.
pub async fn settle<C: ConnectionLike>(
    c: &mut C,
    k: &StreamKeys,
    e: &Entry,
    how: Settle,
    ran: Option<Duration>,
) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    if how == Settle::DeadLetter {
        let mut add = redis::cmd("XADD");
        add.arg(&k.dead).arg("*");
        if let Some(p) = &e.payload {
            add.arg(PAYLOAD_FIELD).arg(p.as_slice());
        }
        add.arg("id").arg(&e.id).arg("group").arg(&k.group);
        pipe.add_command(add).ignore();
    }
    pipe.cmd("XACK")
        .arg(&k.stream)
        .arg(&k.group)
        .arg(&e.id)
        .ignore();
    pipe.hdel(&k.retries, &e.id).ignore();
    if let Some(ran) = ran {
        crate::task::record_run(&mut pipe, &k.stream, ran);
    }
    pipe.query_async(c).await
}

/// Counts a failed run of `e`; the count after it.
pub async fn count_failed_run<C: ConnectionLike>(
    c: &mut C,
    k: &StreamKeys,
    e: &Entry,
) -> RedisResult<i64> {
    redis::cmd("HINCRBY")
        .arg(&k.retries)
        .arg(&e.id)
        .arg(1)
        .query_async(c)
        .await
}

/// Moves ARGV[2]'s oldest pending entry of group ARGV[1] to the pool ARGV[3]; its id, or false.
const GIVE_BACK: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p == 0 then return false end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, p[1][1], 'JUSTID')
return p[1][1]
";

/// Gives our oldest pending entry to the pool, where any consumer's next take finds it; no retry
/// is counted. Its id; `None`: nothing was held.
pub async fn give_back<C: ConnectionLike>(
    c: &mut C,
    k: &StreamKeys,
) -> RedisResult<Option<String>> {
    redis::cmd("EVAL")
        .arg(GIVE_BACK)
        .arg(1)
        .arg(&k.stream)
        .arg(&k.group)
        .arg(&k.consumer)
        .arg(RETURNED_CONSUMER)
        .query_async(c)
        .await
}

/// Leaves the group and the registry (KEYS[2]) if the consumer holds nothing; 1 if it left.
const UNREGISTER: &str = r"
if redis.call('TYPE', KEYS[1])['ok'] == 'stream' then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f['name'] == ARGV[1] then
      if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
    end
  end
end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
";

/// At exit, after giving back: leaves the group (so `XINFO CONSUMERS` lists live consumers only)
/// and the registry; `false`: entries are still pending for us, so the entry stays for the
/// operator to find.
pub async fn unregister<C: ConnectionLike>(c: &mut C, k: &StreamKeys) -> RedisResult<bool> {
    let left: i64 = redis::cmd("EVAL")
        .arg(UNREGISTER)
        .arg(2)
        .arg(&k.stream)
        .arg(&k.registry)
        .arg(&k.group)
        .arg(&k.consumer)
        .query_async(c)
        .await?;
    Ok(left == 1)
}

/// Returns one pending entry of consumer ARGV[2] (any group of stream KEYS[1]) and counts the run
/// it lost in the retry hash KEYS[2]: to the pool ARGV[3] while the count is at most ARGV[1], else
/// to the dead-letter stream KEYS[3] (acknowledged, count cleared, as [`settle`] does). With
/// nothing left the consumer leaves every group and the registry KEYS[4]. 0: nothing left,
/// 1: returned, 2: dead-lettered, 3: the entry was deleted from the stream (dropped).
const RETURN_ONE: &str = r"
local groups = {}
if redis.call('TYPE', KEYS[1])['ok'] == 'stream' then
  groups = redis.call('XINFO', 'GROUPS', KEYS[1])
end
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local p = redis.call('XPENDING', KEYS[1], f['name'], '-', '+', 1, ARGV[2])
  if #p > 0 then
    local id = p[1][1]
    local e = redis.call('XRANGE', KEYS[1], id, id)
    if #e == 0 then
      redis.call('XACK', KEYS[1], f['name'], id)
      redis.call('HDEL', KEYS[2], id)
      return 3
    end
    local n = redis.call('HINCRBY', KEYS[2], id, 1)
    if n > tonumber(ARGV[1]) then
      local add = {'XADD', KEYS[3], '*'}
      local fields = e[1][2]
      for i = 1, #fields, 2 do
        if fields[i] == ARGV[4] then
          table.insert(add, fields[i]); table.insert(add, fields[i + 1])
        end
      end
      table.insert(add, 'id'); table.insert(add, id)
      table.insert(add, 'group'); table.insert(add, f['name'])
      redis.call(unpack(add))
      redis.call('XACK', KEYS[1], f['name'], id)
      redis.call('HDEL', KEYS[2], id)
      return 2
    end
    redis.call('XCLAIM', KEYS[1], f['name'], ARGV[3], 0, id, 'JUSTID')
    return 1
  end
end
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], f['name'], ARGV[2])
end
redis.call('SREM', KEYS[4], ARGV[2])
return 0
";

/// Returns every entry a dead consumer holds on stream `stream`, in whichever group: each counts
/// as a failed run; the operator's [`crate::task::return_held`] for streams.
pub async fn return_held<C: ConnectionLike>(
    c: &mut C,
    stream: &str,
    consumer: &str,
    max_retries: u32,
) -> RedisResult<Returned> {
    let mut out = Returned::default();
    loop {
        let moved: i64 = redis::cmd("EVAL")
            .arg(RETURN_ONE)
            .arg(4)
            .arg(stream)
            .arg(keys::retries(stream))
            .arg(keys::dead_letter(stream))
            .arg(keys::consumers(stream))
            .arg(max_retries)
            .arg(consumer)
            .arg(RETURNED_CONSUMER)
            .arg(PAYLOAD_FIELD)
            .query_async(c)
            .await?;
        match moved {
            1 => out.requeued += 1,
            2 => out.dead_lettered += 1,
            3 => {}
            _ => return Ok(out),
        }
    }
}

/// Whether `key` holds a stream (how the operator tells a stream queue's consumer from a list's).
pub async fn is_stream<C: ConnectionLike>(c: &mut C, key: &str) -> RedisResult<bool> {
    let t: String = redis::cmd("TYPE").arg(key).query_async(c).await?;
    Ok(t == "stream")
}

/// The entries of an `XREADGROUP` answer (`[[stream, [[id, fields]...]]]`, or nil). Pure.
fn read_answer(v: &Value) -> Vec<Entry> {
    match v {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => Some(entries(&pair[1])),
                _ => None,
            })
            .flatten()
            .collect(),
        Value::Map(streams) => streams.iter().flat_map(|(_, es)| entries(es)).collect(),
        _ => vec![],
    }
}

/// `[[id, [field, value, ...] or nil]...]` → entries. Pure.
fn entries(v: &Value) -> Vec<Entry> {
    let Value::Array(items) = v else {
        return vec![];
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id = match pair.first()? {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            Some(Entry {
                id,
                payload: pair.get(1).and_then(payload),
            })
        })
        .collect()
}

/// The [`PAYLOAD_FIELD`] value of a field list. Pure.
fn payload(fields: &Value) -> Option<Vec<u8>> {
    let Value::Array(fv) = fields else {
        return None;
    };
    fv.chunks(2).find_map(|kv| match kv {
        [Value::BulkString(k), Value::BulkString(v)]
            if k.as_slice() == PAYLOAD_FIELD.as_bytes() =>
        {
            Some(v.clone())
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn a_read_answer_gives_each_entrys_id_and_task_field() {
        let answer = Value::Array(vec![Value::Array(vec![
            bulk("jobs"),
            Value::Array(vec![
                entry("1-0", &["task", "a"]),
                entry("2-0", &["other", "x", "task", "b"]),
                entry("3-0", &["other", "x"]),
                Value::Array(vec![bulk("4-0"), Value::Nil]),
            ]),
        ])]);
        let got = read_answer(&answer);
        let want = [
            ("1-0", Some("a")),
            ("2-0", Some("b")),
            ("3-0", None),
            ("4-0", None),
        ];
        assert_eq!(
            got,
            want.map(|(id, p)| Entry {
                id: id.into(),
                payload: p.map(|p| p.as_bytes().to_vec())
            })
        );
        assert!(read_answer(&Value::Nil).is_empty());
        assert!(entries(&Value::Array(vec![])).is_empty());
    }

    #[test]
    fn a_consumers_stream_keys_share_the_queues_slot() {
        let k = StreamKeys::new("events", None, "ns/w-1");
        assert_eq!(k.group, DEFAULT_GROUP);
        assert_eq!(k.retries, "{events}:retries");
        assert_eq!(k.dead, "{events}:dead");
        assert_eq!(k.registry, "{events}:consumers");
        assert_eq!(StreamKeys::new("events", Some("g"), "c").group, "g");
    }
}
