//! `stream`: a Redis stream read by one consumer group (`scaleConfig.streamGroup`).
//!
//! - queued: the group's lag (`XINFO GROUPS` `lag`: entries not yet delivered to the group). Redis
//!   reports no lag after some deletions or trims; then the entries after the group's
//!   `last-delivered-id` are counted with `XRANGE`, at most [`LAG_COUNT_CAP`] of them (a lower
//!   bound is enough to scale on);
//! - in flight: the group's pending entries (delivered, not acknowledged: `XINFO GROUPS`
//!   `pending`), whoever holds them, task mode's pool of returned entries included;
//! - no group yet: the whole stream (`XLEN`) is queued, which is what a group created at `0` (as
//!   task mode creates it) will be delivered; no stream: 0.
//!
//! One `EVAL` per queue, since the group must be picked out of `XINFO GROUPS`'s answer.

use super::{KeyRole, Lengths, Probe, Query};
use qscaler_crds::names::stream::DEFAULT_GROUP;
use redis::Value;

/// Most entries counted one by one when Redis has no lag for the group.
pub const LAG_COUNT_CAP: u64 = 10_000;

/// KEYS[1]: the stream; ARGV[1]: the group; ARGV[2]: [`LAG_COUNT_CAP`]. `{queued, in flight}`.
const READ_GROUP: &str = r"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return {0, 0} end
if t ~= 'stream' then
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if f['name'] == ARGV[1] then
    local lag = f['lag']
    if not lag then
      lag = #redis.call('XRANGE', KEYS[1], '(' .. f['last-delivered-id'], '+', 'COUNT', ARGV[2])
    end
    return {lag, f['pending']}
  end
end
return {redis.call('XLEN', KEYS[1]), 0}
";

pub(super) fn probes(q: &Query<'_>) -> Vec<Probe> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(READ_GROUP)
        .arg(1)
        .arg(q.queue)
        .arg(q.group.unwrap_or(DEFAULT_GROUP))
        .arg(LAG_COUNT_CAP);
    vec![Probe {
        role: KeyRole::Queue,
        key: q.queue.to_owned(),
        expects: "stream",
        cmd,
        count,
    }]
}

/// The script's `{queued, in flight}`. Pure.
fn count(v: &Value) -> Result<Lengths, String> {
    match v {
        Value::Array(pair) if pair.len() == 2 => Ok(Lengths {
            queued: super::integer(&pair[0])?,
            in_flight: super::integer(&pair[1])?,
        }),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qscaler_crds::qworker::QueueFormat;

    fn query<'a>(queue: &'a str, group: Option<&'a str>) -> Query<'a> {
        Query {
            queue,
            format: QueueFormat::Stream,
            consumers: &[],
            group,
        }
    }

    /// The arguments of a probe's command after the script.
    fn args(p: &Probe) -> Vec<String> {
        p.cmd
            .args_iter()
            .skip(2)
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<not a plain argument>".into(),
            })
            .collect()
    }

    #[test]
    fn one_script_on_the_stream_for_the_named_or_default_group() {
        let ps = probes(&query("events", Some("billing")));
        assert_eq!(ps.len(), 1);
        assert_eq!(
            (ps[0].role, ps[0].key.as_str(), ps[0].expects),
            (KeyRole::Queue, "events", "stream")
        );
        assert_eq!(args(&ps[0]), ["1", "events", "billing", "10000"]);
        assert_eq!(args(&probes(&query("events", None))[0])[2], DEFAULT_GROUP);
    }

    #[test]
    fn the_answer_is_lag_then_pending() {
        let pair = |a, b| Value::Array(vec![a, b]);
        assert_eq!(
            count(&pair(Value::Int(7), Value::Int(2))),
            Ok(Lengths {
                queued: 7,
                in_flight: 2
            })
        );
        assert_eq!(
            count(&pair(Value::Int(0), Value::Int(0))),
            Ok(Lengths::default())
        );
        assert!(count(&pair(Value::Int(-1), Value::Int(0))).is_err());
        assert!(count(&Value::Array(vec![Value::Int(1)])).is_err());
        assert!(count(&Value::Int(3)).is_err());
        assert!(count(&Value::Nil).is_err());
    }
}
