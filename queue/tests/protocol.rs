//! The task protocol against a real redis-server on a free loopback port, started per test.

mod common;
use common::Server;

use std::time::{Duration, Instant};

use qscaler_crds::qworker::QueueFormat;
use qscaler_queue::depth::{self, KeyRole, Lengths, Query};
use qscaler_queue::task::{self, Returned, Settle};
use qscaler_queue::{keys, Conn, TaskKeys};
use redis::AsyncCommands;

async fn list(c: &mut Conn, key: &str) -> Vec<String> {
    c.lrange(key, 0, -1).await.unwrap()
}

async fn count(c: &mut Conn, k: &TaskKeys, item: &str) -> Option<i64> {
    c.hget(&k.retries, item).await.unwrap()
}

#[tokio::test]
async fn take_settle_and_give_back_keep_each_task_in_one_list() {
    let (_s, mut c) = Server::start().await;
    let k = TaskKeys::new("jobs", &keys::consumer(Some("ns"), "w-1"));
    for p in ["a", "b", "c", "d"] {
        let _: () = c.lpush(&k.queue, p).await.unwrap();
    }
    // FIFO: the first pushed is taken first, and is then ours.
    let block = Duration::from_millis(100);
    let a = task::take(&mut c, &k, block).await.unwrap().unwrap();
    assert_eq!(a, b"a");
    assert_eq!(list(&mut c, &k.processing).await, ["a"]);
    task::settle(&mut c, &k, &a, Settle::Done).await.unwrap();
    assert!(list(&mut c, &k.processing).await.is_empty());

    // A failed run is counted; past the limit it is dead-lettered with its count cleared.
    let b = task::take(&mut c, &k, block).await.unwrap().unwrap();
    assert_eq!(task::count_failed_run(&mut c, &k, &b).await.unwrap(), 1);
    assert_eq!(task::count_failed_run(&mut c, &k, &b).await.unwrap(), 2);
    assert!(task::past_retries(2, 1));
    task::settle(&mut c, &k, &b, Settle::DeadLetter)
        .await
        .unwrap();
    assert_eq!(list(&mut c, &k.dead).await, ["b"]);
    assert_eq!(count(&mut c, &k, "b").await, None);
    assert!(list(&mut c, &k.processing).await.is_empty());

    // Held tasks read oldest first; given back, they are the next ones taken.
    let c1 = task::take(&mut c, &k, block).await.unwrap().unwrap();
    let d1 = task::take(&mut c, &k, block).await.unwrap().unwrap();
    assert_eq!((c1.as_slice(), d1.as_slice()), (&b"c"[..], &b"d"[..]));
    assert_eq!(task::held(&mut c, &k).await.unwrap(), [b"c", b"d"]);
    let _: () = c.lpush(&k.queue, "e").await.unwrap();
    assert_eq!(task::give_back(&mut c, &k).await.unwrap().unwrap(), b"d");
    assert_eq!(task::give_back(&mut c, &k).await.unwrap().unwrap(), b"c");
    assert_eq!(task::give_back(&mut c, &k).await.unwrap(), None);
    assert_eq!(list(&mut c, &k.queue).await, ["e", "d", "c"]);
    assert_eq!(
        count(&mut c, &k, "c").await,
        None,
        "a give-back is no retry"
    );
    let next = task::take(&mut c, &k, block).await.unwrap().unwrap();
    assert_eq!(next, b"c");

    // An empty queue: the take times out with nothing.
    let other = TaskKeys::new("empty", "w-1");
    assert_eq!(task::take(&mut c, &other, block).await.unwrap(), None);
}

#[tokio::test]
async fn a_blocked_take_is_woken_by_unblock() {
    let (s, mut control) = Server::start().await;
    let k = TaskKeys::new("idle", "w-1");
    let mut blocking = s.connect().await.unwrap();
    let id = task::client_id(&mut blocking, &k).await.unwrap();
    let k2 = k.clone();
    let started = Instant::now();
    let taker =
        tokio::spawn(async move { task::take(&mut blocking, &k2, Duration::from_secs(4)).await });
    // Unblock until it has taken effect: the take may not have reached Redis yet.
    while !taker.is_finished() {
        task::unblock(&mut control, &k, id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(started.elapsed() < Duration::from_secs(3), "not woken");
    }
    assert_eq!(taker.await.unwrap().unwrap(), None);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_dead_consumers_tasks_are_returned_counted_or_dead_lettered() {
    let (_s, mut c) = Server::start().await;
    let k = TaskKeys::new("q", &keys::consumer(Some("ns"), "dead-pod"));
    for p in ["fresh", "tired", "new"] {
        let _: () = c.lpush(&k.processing, p).await.unwrap();
    }
    // "tired" already failed twice; with max_retries 2 this lost run is one too many.
    let _: () = c.hset(&k.retries, "tired", 2).await.unwrap();
    let _: () = c.lpush(&k.queue, "waiting").await.unwrap();
    let r = task::return_held(&mut c, &k, 2).await.unwrap();
    assert_eq!(
        r,
        Returned {
            requeued: 2,
            dead_lettered: 1
        }
    );
    assert!(list(&mut c, &k.processing).await.is_empty());
    assert_eq!(list(&mut c, &k.dead).await, ["tired"]);
    assert_eq!(count(&mut c, &k, "tired").await, None);
    assert_eq!(count(&mut c, &k, "fresh").await, Some(1));
    assert_eq!(count(&mut c, &k, "new").await, Some(1));
    // Returned to the consuming (right) end, so they are taken before what was waiting, the
    // oldest held ("fresh", taken first) first.
    assert_eq!(list(&mut c, &k.queue).await, ["waiting", "new", "fresh"]);
    // Nothing held: nothing to do.
    assert_eq!(
        task::return_held(&mut c, &k, 2).await.unwrap(),
        Returned::default()
    );
}

#[tokio::test]
async fn depths_count_queued_and_in_flight_and_name_a_broken_key() {
    let (_s, mut c) = Server::start().await;
    let consumers = vec![
        keys::consumer(Some("ns"), "a"),
        keys::consumer(Some("ns"), "b"),
    ];
    for i in 0..5 {
        let _: () = c.lpush("jobs", i).await.unwrap();
    }
    let _: () = c
        .lpush(keys::processing("jobs", &consumers[0]), "x")
        .await
        .unwrap();
    let _: () = c.set("text", "not a list").await.unwrap();
    let none: Vec<String> = vec![];
    let got = depth::read(
        &mut c,
        &[
            Query {
                queue: "jobs",
                format: QueueFormat::List,
                consumers: &consumers,
                group: None,
            },
            Query {
                queue: "text",
                format: QueueFormat::List,
                consumers: &none,
                group: None,
            },
            Query {
                queue: "missing",
                format: QueueFormat::List,
                consumers: &none,
                group: None,
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        got[0],
        Ok(Lengths {
            queued: 5,
            in_flight: 1
        })
    );
    let failed = got[1].clone().unwrap_err();
    assert_eq!(
        (failed.role, failed.key.as_str(), failed.holds.as_deref()),
        (KeyRole::Queue, "text", Some("string"))
    );
    assert_eq!(got[2], Ok(Lengths::default()));
    assert!(depth::read(&mut c, &[]).await.unwrap().is_empty());
}

/// Settling with a run time adds to the queue's timings in the same step, and a depth reading
/// carries them (in its one pipeline); a queue nothing was timed on has none.
#[tokio::test]
async fn settled_tasks_are_timed_and_read_with_the_depths() {
    let (_s, mut c) = Server::start().await;
    let k = TaskKeys::new("timed", &keys::consumer(Some("ns"), "w-1"));
    for p in ["a", "b", "c"] {
        let _: () = c.lpush(&k.queue, p).await.unwrap();
    }
    let block = Duration::from_millis(100);
    let a = task::take(&mut c, &k, block).await.unwrap().unwrap();
    task::settle_timed(
        &mut c,
        &k,
        &a,
        Settle::Done,
        Some(Duration::from_millis(1500)),
    )
    .await
    .unwrap();
    let b = task::take(&mut c, &k, block).await.unwrap().unwrap();
    task::settle_timed(
        &mut c,
        &k,
        &b,
        Settle::DeadLetter,
        Some(Duration::from_millis(250)),
    )
    .await
    .unwrap();
    // Without a run time (the operator's own moves), nothing is timed.
    let t = task::take(&mut c, &k, block).await.unwrap().unwrap();
    task::settle(&mut c, &k, &t, Settle::Done).await.unwrap();
    let none: Vec<String> = vec![];
    let query = |queue| Query {
        queue,
        format: QueueFormat::List,
        consumers: &none,
        group: None,
    };
    let got = depth::read_timed(&mut c, &[query("timed"), query("untimed")])
        .await
        .unwrap();
    assert_eq!(
        got[0].1,
        Some(depth::Tally {
            tasks: 2,
            millis: 1750
        })
    );
    assert_eq!(got[0].0, Ok(Lengths::default()));
    assert_eq!(got[1].1, None);
    let stats: Vec<String> = c.hkeys(keys::task_stats("timed")).await.unwrap();
    assert_eq!(stats.len(), 2, "{stats:?}");
}

#[tokio::test]
async fn the_registry_names_who_may_hold_a_list_until_it_is_settled() {
    let (_s, mut c) = Server::start().await;
    let queue = "q[1]*";
    let held = TaskKeys::new(queue, &keys::consumer(Some("ns"), "a"));
    let empty = TaskKeys::new(queue, &keys::consumer(Some("ns"), "b"));
    let other = TaskKeys::new(queue, &keys::consumer(Some("other"), "c"));
    for k in [&held, &empty, &other] {
        task::register(&mut c, k).await.unwrap();
    }
    let _: () = c.lpush(&held.processing, "t").await.unwrap();
    assert_eq!(
        depth::holders(&mut c, queue, "ns").await.unwrap(),
        ["a", "b"]
    );
    assert!(depth::holders(&mut c, queue, "none")
        .await
        .unwrap()
        .is_empty());
    // A consumer leaves only with nothing held.
    assert!(task::unregister(&mut c, &empty).await.unwrap());
    assert!(!task::unregister(&mut c, &held).await.unwrap());
    assert_eq!(depth::holders(&mut c, queue, "ns").await.unwrap(), ["a"]);
    // Returning the last task of a dead consumer takes it out of the registry too.
    task::return_held(&mut c, &held, 3).await.unwrap();
    assert!(depth::holders(&mut c, queue, "ns")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(depth::holders(&mut c, queue, "other").await.unwrap(), ["c"]);
}
