//! `format: stream` against a real redis-server on a free loopback port, started per test: the
//! depth probe (lag + pending) and task mode's moves (take, settle, give back, return).

mod common;
use common::Server;

use std::time::Duration;

use qscaler_crds::qworker::QueueFormat;
use qscaler_queue::depth::{self, KeyRole, Lengths, Query};
use qscaler_queue::keys;
use qscaler_queue::stream_task::{self as st, Entry, StreamKeys, RETURNED_CONSUMER};
use qscaler_queue::task::{Returned, Settle};
use redis::aio::ConnectionLike;
use redis::Value;

async fn start() -> (Server, impl ConnectionLike) {
    Server::start().await
}

async fn cmd<T: redis::FromRedisValue, C: ConnectionLike>(c: &mut C, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(c).await.unwrap()
}

async fn add<C: ConnectionLike>(c: &mut C, stream: &str, payload: &str) -> String {
    cmd(c, &["XADD", stream, "*", "task", payload]).await
}

/// Who holds each pending entry of the group: (id, consumer), oldest first.
async fn pending<C: ConnectionLike>(c: &mut C, stream: &str, group: &str) -> Vec<(String, String)> {
    let v: Vec<(String, String, i64, i64)> =
        cmd(c, &["XPENDING", stream, group, "-", "+", "100"]).await;
    v.into_iter().map(|(id, who, _, _)| (id, who)).collect()
}

async fn read_one<C: ConnectionLike>(
    c: &mut C,
    stream: &str,
    group: Option<&str>,
) -> Result<Lengths, String> {
    let q = Query {
        queue: stream,
        format: QueueFormat::Stream,
        consumers: &[],
        group,
    };
    let mut got = depth::read(c, &[q]).await.unwrap();
    got.remove(0)
        .map_err(|f| format!("{:?} {} {:?} {}", f.role, f.key, f.holds, f.expects))
}

fn lengths(queued: u64, in_flight: u64) -> Lengths {
    Lengths { queued, in_flight }
}

#[tokio::test]
async fn a_streams_backlog_is_its_groups_lag_plus_pending() {
    let (_s, mut c) = start().await;
    // No stream: nothing. No group yet: the whole stream waits.
    assert_eq!(read_one(&mut c, "ev", None).await, Ok(lengths(0, 0)));
    for i in 0..5 {
        add(&mut c, "ev", &format!("t{i}")).await;
    }
    assert_eq!(read_one(&mut c, "ev", None).await, Ok(lengths(5, 0)));
    // Two entries delivered to the default group: 3 lag, 2 pending; one acknowledged.
    let k = StreamKeys::new("ev", None, "ns/w-1");
    st::ensure_group(&mut c, &k).await.unwrap();
    st::ensure_group(&mut c, &k).await.unwrap(); // BUSYGROUP is fine
    let a = st::take_new(&mut c, &k, Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    st::take_new(&mut c, &k, Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read_one(&mut c, "ev", None).await, Ok(lengths(3, 2)));
    st::settle(&mut c, &k, &a, Settle::Done, None)
        .await
        .unwrap();
    assert_eq!(read_one(&mut c, "ev", None).await, Ok(lengths(3, 1)));
    // Another group of the same stream has its own backlog; a named group that does not exist
    // yet reads as the whole stream.
    let other = StreamKeys::new("ev", Some("billing"), "ns/w-2");
    assert_eq!(
        read_one(&mut c, "ev", Some("billing")).await,
        Ok(lengths(5, 0))
    );
    st::ensure_group(&mut c, &other).await.unwrap();
    st::take_new(&mut c, &other, Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read_one(&mut c, "ev", Some("billing")).await,
        Ok(lengths(4, 1))
    );
    assert_eq!(read_one(&mut c, "ev", None).await, Ok(lengths(3, 1)));
    // A deletion past the last delivered entry: Redis has no lag, the entries are counted.
    let ids: Vec<(String, Value)> = cmd(&mut c, &["XRANGE", "ev", "-", "+"]).await;
    let _: i64 = cmd(&mut c, &["XDEL", "ev", &ids[3].0]).await;
    let groups: Vec<std::collections::HashMap<String, Value>> =
        cmd(&mut c, &["XINFO", "GROUPS", "ev"]).await;
    assert!(groups.iter().all(|g| g["lag"] == Value::Nil), "{groups:?}");
    assert_eq!(read_one(&mut c, "ev", None).await, Ok(lengths(2, 1)));
    // A key of another type is named, with what it holds.
    let _: () = cmd(&mut c, &["SET", "text", "x"]).await;
    assert_eq!(
        read_one(&mut c, "text", None).await,
        Err(format!("{:?} text Some(\"string\") stream", KeyRole::Queue))
    );
}

#[tokio::test]
async fn take_settle_give_back_and_return_keep_each_entry_in_one_place() {
    let (_s, mut c) = start().await;
    let w1 = StreamKeys::new("jobs", None, &keys::consumer(Some("ns"), "w-1"));
    let w2 = StreamKeys::new("jobs", None, &keys::consumer(Some("ns"), "w-2"));
    st::ensure_group(&mut c, &w1).await.unwrap();
    st::register(&mut c, &w1).await.unwrap();
    let ids = [
        add(&mut c, "jobs", "a").await,
        add(&mut c, "jobs", "b").await,
        add(&mut c, "jobs", "c").await,
    ];
    let _: String = cmd(&mut c, &["XADD", "jobs", "*", "other", "x"]).await;

    // Nothing returned yet; new entries in order, each with its payload.
    assert_eq!(st::take_returned(&mut c, &w1).await.unwrap(), None);
    let a = st::take_new(&mut c, &w1, Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.id.as_str(), a.payload.as_deref()),
        (ids[0].as_str(), Some(&b"a"[..]))
    );
    let b = st::take_new(&mut c, &w1, Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        st::held(&mut c, &w1).await.unwrap(),
        vec![a.clone(), b.clone()]
    );

    // Done: acknowledged, its count gone. A failed run counts; dead-lettering copies the payload.
    assert_eq!(st::count_failed_run(&mut c, &w1, &a).await.unwrap(), 1);
    st::settle(
        &mut c,
        &w1,
        &a,
        Settle::Done,
        Some(Duration::from_millis(1500)),
    )
    .await
    .unwrap();
    let count: Option<i64> = cmd(&mut c, &["HGET", &w1.retries, &a.id]).await;
    assert_eq!(count, None);
    assert_eq!(st::count_failed_run(&mut c, &w1, &b).await.unwrap(), 1);
    st::settle(
        &mut c,
        &w1,
        &b,
        Settle::DeadLetter,
        Some(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    // Both runs are in the queue's timings, which the operator reads for every format.
    let stats = qscaler_queue::keys::task_stats(&w1.stream);
    let timed: Vec<i64> = cmd(&mut c, &["HMGET", &stats, "tasks", "ms"]).await;
    assert_eq!(timed, [2, 2000]);
    let dead: Vec<(String, Vec<String>)> = cmd(&mut c, &["XRANGE", &w1.dead, "-", "+"]).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].1,
        ["task", "b", "id", b.id.as_str(), "group", "qscaler"]
    );
    assert!(st::held(&mut c, &w1).await.unwrap().is_empty());

    // Give back: w1's entry goes to the pool, and w2's next take finds it there first.
    let c_entry = st::take_new(&mut c, &w1, Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c_entry.payload.as_deref(), Some(&b"c"[..]));
    assert_eq!(
        st::give_back(&mut c, &w1).await.unwrap(),
        Some(c_entry.id.clone())
    );
    assert_eq!(st::give_back(&mut c, &w1).await.unwrap(), None);
    assert_eq!(
        pending(&mut c, "jobs", "qscaler").await,
        [(c_entry.id.clone(), RETURNED_CONSUMER.to_string())]
    );
    assert!(st::unregister(&mut c, &w1).await.unwrap());
    let members: Vec<String> = cmd(&mut c, &["SMEMBERS", &w1.registry]).await;
    assert!(members.is_empty());
    st::register(&mut c, &w2).await.unwrap();
    let again = st::take_returned(&mut c, &w2).await.unwrap().unwrap();
    assert_eq!(again, c_entry);
    assert_eq!(
        pending(&mut c, "jobs", "qscaler").await,
        [(c_entry.id.clone(), w2.consumer.clone())]
    );
    // The entry without a task field arrives without a payload.
    let bare = st::take_new(&mut c, &w2, Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bare.payload, None);
    // Holding something, w2 stays registered.
    assert!(!st::unregister(&mut c, &w2).await.unwrap());

    // w2 dies holding two entries; max_retries 1. First return: both counted and pooled.
    let r = st::return_held(&mut c, "jobs", &w2.consumer, 1)
        .await
        .unwrap();
    assert_eq!(
        r,
        Returned {
            requeued: 2,
            dead_lettered: 0
        }
    );
    let pool: Vec<String> = pending(&mut c, "jobs", "qscaler")
        .await
        .into_iter()
        .map(|(id, who)| {
            assert_eq!(who, RETURNED_CONSUMER);
            id
        })
        .collect();
    assert_eq!(pool, [c_entry.id.clone(), bare.id.clone()]);
    let members: Vec<String> = cmd(&mut c, &["SMEMBERS", &w2.registry]).await;
    assert!(members.is_empty(), "{members:?}");
    // A third consumer takes both, dies too: past one retry, both are dead-lettered.
    let w3 = StreamKeys::new("jobs", None, &keys::consumer(Some("ns"), "w-3"));
    st::register(&mut c, &w3).await.unwrap();
    let got: Vec<Entry> = vec![
        st::take_returned(&mut c, &w3).await.unwrap().unwrap(),
        st::take_returned(&mut c, &w3).await.unwrap().unwrap(),
    ];
    assert_eq!(got[0], c_entry);
    assert_eq!(st::take_returned(&mut c, &w3).await.unwrap(), None);
    let r = st::return_held(&mut c, "jobs", &w3.consumer, 1)
        .await
        .unwrap();
    assert_eq!(
        r,
        Returned {
            requeued: 0,
            dead_lettered: 2
        }
    );
    assert!(pending(&mut c, "jobs", "qscaler").await.is_empty());
    let dead: Vec<(String, Vec<String>)> = cmd(&mut c, &["XRANGE", &w1.dead, "-", "+"]).await;
    assert_eq!(dead.len(), 3);
    assert_eq!(
        dead[1].1,
        ["task", "c", "id", c_entry.id.as_str(), "group", "qscaler"]
    );
    let retries: i64 = cmd(&mut c, &["HLEN", &w1.retries]).await;
    assert_eq!(retries, 0);
    // Nothing is left anywhere: no lag, nothing pending; the dead consumers left the group.
    assert_eq!(read_one(&mut c, "jobs", None).await, Ok(lengths(0, 0)));
    let consumers: Vec<Value> = cmd(&mut c, &["XINFO", "CONSUMERS", "jobs", "qscaler"]).await;
    assert_eq!(consumers.len(), 1, "only the pool is left: {consumers:?}");
    // Returning a consumer of a stream that is gone is nothing, not an error.
    let r = st::return_held(&mut c, "gone", "ns/w-9", 1).await.unwrap();
    assert_eq!(r, Returned::default());
    assert!(st::is_stream(&mut c, "jobs").await.unwrap());
    assert!(!st::is_stream(&mut c, "gone").await.unwrap());
}

#[tokio::test]
async fn an_entry_deleted_while_pending_is_dropped_not_returned() {
    let (_s, mut c) = start().await;
    let w = StreamKeys::new("del", None, "ns/w-1");
    st::ensure_group(&mut c, &w).await.unwrap();
    add(&mut c, "del", "a").await;
    let a = st::take_new(&mut c, &w, Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    let _: i64 = cmd(&mut c, &["XDEL", "del", &a.id]).await;
    // Our own view: the entry comes back without its fields.
    assert_eq!(
        st::held(&mut c, &w).await.unwrap(),
        vec![Entry {
            id: a.id.clone(),
            payload: None
        }]
    );
    let r = st::return_held(&mut c, "del", &w.consumer, 3)
        .await
        .unwrap();
    assert_eq!(r, Returned::default());
    assert!(pending(&mut c, "del", "qscaler").await.is_empty());
}
