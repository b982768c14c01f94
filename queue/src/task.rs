//! Task mode's moves, at least once: a task is always in exactly one of the queue, one consumer's
//! processing list, or the dead-letter list, and each move between them is one atomic Redis step.
//!
//! * take: `BLMOVE <queue> <processing> RIGHT LEFT` (producers `LPUSH`, so FIFO);
//! * done: `LREM` from processing and `HDEL` its retry count, in one `MULTI`;
//! * failed run: `HINCRBY <retries>`; past `max_retries` ([`past_retries`]) the task is
//!   dead-lettered: `LREM` + `LPUSH <dead>` + `HDEL` in one `MULTI`; else its holder runs it again;
//! * give back (a drain or a cut: not the task's fault, no retry counted): `LMOVE` from processing
//!   to the queue's consuming end, so it is taken next;
//! * return (the operator, for a consumer that died holding tasks): each task counts a failed run
//!   and is requeued, or dead-lettered past `max_retries`, in one script run per task.
//!
//! A consumer is in the queue's registry (`SADD` before its first take) while its processing list
//! may hold something, so the operator finds the list of a pod that vanished without a `SCAN`
//! (which a Redis Cluster would need on every node); it leaves it when its list is empty at exit,
//! or when the operator returned its last task. Every key of a queue shares its hash tag, so
//! each move and script touches one slot.
//!
//! Retry counts are keyed by payload: identical payloads share a count.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::RedisResult;

use crate::keys::{self, TaskKeys};
use crate::topology::{slot, Conn};

/// One blocking take: a task, or `None` when `block` passed with the queue empty. Run it on a
/// connection of its own (it holds the connection while it blocks) whose response timeout is
/// above `block`; [`unblock`] wakes it early.
pub async fn take(c: &mut Conn, k: &TaskKeys, block: Duration) -> RedisResult<Option<Vec<u8>>> {
    redis::cmd("BLMOVE")
        .arg(&k.queue)
        .arg(&k.processing)
        .arg("RIGHT")
        .arg("LEFT")
        .arg(block.as_secs_f64())
        .query_async(c)
        .await
}

/// Runs a command without keys on the server that holds `k`'s slot (where a take blocks), on a
/// cluster; on one server, there.
async fn on_queue_node(c: &mut Conn, k: &TaskKeys, cmd: redis::Cmd) -> RedisResult<redis::Value> {
    match c {
        Conn::Single(s) => cmd.query_async(s).await,
        Conn::Cluster(cc) => {
            let route = Route::new(slot(&k.queue), SlotAddr::Master);
            cc.route_command(
                cmd,
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
            )
            .await
        }
    }
}

/// The id [`unblock`] needs to wake a take blocked on this connection.
pub async fn client_id(c: &mut Conn, k: &TaskKeys) -> RedisResult<i64> {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("ID");
    Ok(redis::from_redis_value(on_queue_node(c, k, cmd).await?)?)
}

/// Wakes a blocked [`take`] of connection `id` (it returns `None`), from another connection.
pub async fn unblock(c: &mut Conn, k: &TaskKeys, id: i64) -> RedisResult<()> {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("UNBLOCK").arg(id);
    on_queue_node(c, k, cmd).await.map(|_| ())
}

/// Enters this consumer in the queue's registry: before its first take, so a list it may hold
/// can always be found.
pub async fn register(c: &mut Conn, k: &TaskKeys) -> RedisResult<()> {
    enter_registry(c, &k.registry, &k.consumer).await
}

/// `SADD registry consumer`: the registry the operator reads instead of scanning for holders, for
/// lists and streams alike.
pub async fn enter_registry<C: ConnectionLike>(
    c: &mut C,
    registry: &str,
    consumer: &str,
) -> RedisResult<()> {
    redis::cmd("SADD")
        .arg(registry)
        .arg(consumer)
        .query_async::<i64>(c)
        .await
        .map(|_| ())
}

/// Leaves the registry if the processing list (KEYS[1]) is empty, in one step; 1 if it left.
const UNREGISTER: &str = r"
if redis.call('LLEN', KEYS[1]) > 0 then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
";

/// Leaves the queue's registry when nothing is held (at exit, after giving back); `false`: the
/// list still holds tasks, so the entry stays for the operator to find.
pub async fn unregister(c: &mut Conn, k: &TaskKeys) -> RedisResult<bool> {
    let left: i64 = redis::cmd("EVAL")
        .arg(UNREGISTER)
        .arg(2)
        .arg(&k.processing)
        .arg(&k.registry)
        .arg(&k.consumer)
        .query_async(c)
        .await?;
    Ok(left == 1)
}

/// What this consumer holds (a restarted container, a take whose reply was lost): oldest first,
/// the order they were taken in.
pub async fn held(c: &mut Conn, k: &TaskKeys) -> RedisResult<Vec<Vec<u8>>> {
    let mut items: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(&k.processing)
        .arg(0)
        .arg(-1)
        .query_async(c)
        .await?;
    // Takes push onto the left: the oldest is at the right end.
    items.reverse();
    Ok(items)
}

/// How a held task leaves the processing list for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// It succeeded.
    Done,
    /// It failed past its retries: kept on the dead-letter list.
    DeadLetter,
}

/// Takes `item` off the processing list and forgets its retry count, in one `MULTI`; a
/// dead-lettered one goes onto the dead-letter list in the same step.
pub async fn settle(c: &mut Conn, k: &TaskKeys, item: &[u8], how: Settle) -> RedisResult<()> {
    settle_timed(c, k, item, how, None).await
}

/// [`settle`], and when `ran` is known, adds the task and its run time to the queue's timings
/// ([`keys::task_stats`]) in the same `MULTI`, for the operator's drain target.
pub async fn settle_timed(
    c: &mut Conn,
    k: &TaskKeys,
    item: &[u8],
    how: Settle,
    ran: Option<Duration>,
) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic().lrem(&k.processing, 1, item).ignore();
    if how == Settle::DeadLetter {
        pipe.lpush(&k.dead, item).ignore();
    }
    pipe.hdel(&k.retries, item).ignore();
    if let Some(ran) = ran {
        record_run(&mut pipe, &k.queue, ran);
    }
    pipe.query_async(c).await
}

/// Adds one settled task that ran for `ran` to `queue`'s timings ([`keys::task_stats`]), as part
/// of `pipe`.
pub(crate) fn record_run(pipe: &mut redis::Pipeline, queue: &str, ran: Duration) {
    let stats = keys::task_stats(queue);
    let millis = i64::try_from(ran.as_millis()).unwrap_or(i64::MAX);
    pipe.hincr(&stats, keys::STATS_TASKS, 1).ignore();
    pipe.hincr(&stats, keys::STATS_MILLIS, millis).ignore();
}

/// Counts a failed run of `item`; the count after it.
pub async fn count_failed_run(c: &mut Conn, k: &TaskKeys, item: &[u8]) -> RedisResult<i64> {
    redis::cmd("HINCRBY")
        .arg(&k.retries)
        .arg(item)
        .arg(1)
        .query_async(c)
        .await
}

/// After `failed_runs` failed runs, is the task dead-lettered? It runs once plus `max_retries`
/// reruns. [`RETURN_ONE`] applies the same rule inside Redis.
pub fn past_retries(failed_runs: i64, max_retries: u32) -> bool {
    failed_runs > i64::from(max_retries)
}

/// Gives the oldest held task back to the queue's consuming end, where it is taken next; no retry
/// is counted. `None`: nothing was held.
pub async fn give_back(c: &mut Conn, k: &TaskKeys) -> RedisResult<Option<Vec<u8>>> {
    redis::cmd("LMOVE")
        .arg(&k.processing)
        .arg(&k.queue)
        .arg("LEFT")
        .arg("RIGHT")
        .query_async(c)
        .await
}

/// What returning a consumer's tasks did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Returned {
    /// Back in the queue, to be taken next.
    pub requeued: u64,
    /// Past the retry limit: on the dead-letter list.
    pub dead_lettered: u64,
}

/// Returns one task of a processing list (KEYS[1]) and counts the run it lost in the retry hash
/// (KEYS[3]): to the queue's consuming end (KEYS[2]) while the count is at most ARGV[1], else to
/// the dead-letter list (KEYS[4]) with its count cleared ([`past_retries`], [`settle`] with
/// [`Settle::DeadLetter`]). 0: nothing left (and the consumer ARGV[2] leaves the registry
/// KEYS[5]), 1: requeued, 2: dead-lettered.
const RETURN_ONE: &str = r"
local item = redis.call('LINDEX', KEYS[1], 0)
if not item then
  redis.call('SREM', KEYS[5], ARGV[2])
  return 0
end
local n = redis.call('HINCRBY', KEYS[3], item, 1)
if n > tonumber(ARGV[1]) then
  redis.call('LMOVE', KEYS[1], KEYS[4], 'LEFT', 'LEFT')
  redis.call('HDEL', KEYS[3], item)
  return 2
end
redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
return 1
";

/// Returns every task a consumer holds, for a consumer that died holding them: each counts as a
/// failed run (a task that kills its container would otherwise run forever). One atomic script
/// run per task, so a crash half-way leaves every task in exactly one list with its count.
pub async fn return_held(c: &mut Conn, k: &TaskKeys, max_retries: u32) -> RedisResult<Returned> {
    let mut out = Returned::default();
    loop {
        // Plain EVAL (not EVALSHA + SCRIPT LOAD): one command for an ACL to allow.
        let moved: i64 = redis::cmd("EVAL")
            .arg(RETURN_ONE)
            .arg(5)
            .arg(&k.processing)
            .arg(&k.queue)
            .arg(&k.retries)
            .arg(&k.dead)
            .arg(&k.registry)
            .arg(max_retries)
            .arg(&k.consumer)
            .query_async(c)
            .await?;
        match moved {
            1 => out.requeued += 1,
            2 => out.dead_lettered += 1,
            _ => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_runs_once_plus_its_retries() {
        // max_retries 3: failed runs 1..=3 are rerun, the 4th dead-letters.
        assert!(!past_retries(1, 3));
        assert!(!past_retries(3, 3));
        assert!(past_retries(4, 3));
        // No retries: the first failure dead-letters.
        assert!(past_retries(1, 0));
        assert!(!past_retries(0, 0));
        assert!(past_retries(i64::MAX, u32::MAX));
    }
}
