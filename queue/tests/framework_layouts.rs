//! The `sidekiq` and `bullmq` readings' scripts on a real redis-server, with keys shaped as the
//! frameworks write them (Sidekiq 6.4's `launcher.rb`/`processor.rb`, BullMQ 5's `pause-7.lua`):
//! the cases the e2e test with the real frameworks does not reach — a dead Sidekiq process, another
//! queue's busy jobs, Sidekiq 7's `:work` hash, a paused BullMQ queue, a custom prefix, delayed jobs.

mod common;
use common::Server;

use qscaler_crds::qworker::QueueFormat;
use qscaler_queue::depth::{self, KeyRole, Lengths, Query};
use redis::aio::ConnectionLike;

async fn start() -> (Server, impl ConnectionLike) {
    Server::start().await
}

async fn cmd<C: ConnectionLike>(c: &mut C, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async::<redis::Value>(c).await.unwrap();
}

async fn reading<C: ConnectionLike>(c: &mut C, queue: &str, format: QueueFormat) -> Lengths {
    let q = Query {
        queue,
        format,
        consumers: &[],
        group: None,
    };
    depth::read(c, &[q]).await.unwrap().remove(0).unwrap()
}

/// A busy-job entry as Sidekiq's heartbeat writes it (`{queue:, payload: jobstr, run_at:}`).
fn work(queue: &str) -> String {
    format!(
        r#"{{"queue":"{queue}","payload":"{{\"queue\":\"{queue}\",\"class\":\"RecordJob\",\"args\":[1],\"jid\":\"abc\"}}","run_at":1796160923}}"#
    )
}

#[tokio::test]
async fn sidekiq_counts_this_queues_busy_jobs_of_live_processes() {
    let (_server, mut c) = start().await;
    let c = &mut c;
    assert_eq!(
        reading(c, "mail", QueueFormat::Sidekiq).await,
        Lengths::default(),
        "nothing ever ran"
    );
    cmd(c, &["LPUSH", "queue:mail", "j1", "j2", "j3"]).await;
    cmd(c, &["LPUSH", "queue:other", "j4"]).await;
    // A live Sidekiq 6 process: two jobs of mail, one of another queue.
    cmd(
        c,
        &["SADD", "processes", "w-1:7:aaa", "w-2:7:bbb", "gone:7:ccc"],
    )
    .await;
    cmd(c, &["HSET", "w-1:7:aaa", "busy", "3", "beat", "1"]).await;
    let (m, o) = (work("mail"), work("other"));
    cmd(
        c,
        &["HSET", "w-1:7:aaa:workers", "t1", &m, "t2", &m, "t3", &o],
    )
    .await;
    // A live Sidekiq 7 process writes `:work`.
    cmd(c, &["HSET", "w-2:7:bbb", "busy", "1"]).await;
    cmd(c, &["HSET", "w-2:7:bbb:work", "t1", &m]).await;
    // A dead one: its heartbeat hash expired, its work hash not yet.
    cmd(c, &["HSET", "gone:7:ccc:workers", "t1", &m, "t2", &m]).await;
    // Not JSON: not counted, and not an error.
    cmd(c, &["HSET", "w-1:7:aaa:workers", "t4", "garbage"]).await;
    assert_eq!(
        reading(c, "mail", QueueFormat::Sidekiq).await,
        Lengths {
            queued: 3,
            in_flight: 3
        }
    );
    assert_eq!(
        reading(c, "other", QueueFormat::Sidekiq).await,
        Lengths {
            queued: 1,
            in_flight: 1
        }
    );
}

#[tokio::test]
async fn sidekiq_names_a_queue_key_of_the_wrong_type() {
    let (_server, mut c) = start().await;
    cmd(&mut c, &["SET", "queue:mail", "x"]).await;
    let q = Query {
        queue: "mail",
        format: QueueFormat::Sidekiq,
        consumers: &[],
        group: None,
    };
    let failed = depth::read(&mut c, &[q])
        .await
        .unwrap()
        .remove(0)
        .unwrap_err();
    assert_eq!(
        (failed.role, failed.key.as_str(), failed.holds.as_deref()),
        (KeyRole::Queue, "queue:mail", Some("string"))
    );
}

#[tokio::test]
async fn bullmq_counts_waiting_prioritized_and_active_not_delayed_nor_paused() {
    let (_server, mut c) = start().await;
    let c = &mut c;
    cmd(c, &["LPUSH", "bull:mail:wait", "1", "2"]).await;
    cmd(c, &["ZADD", "bull:mail:prioritized", "1", "3", "2", "4"]).await;
    cmd(c, &["LPUSH", "bull:mail:active", "5"]).await;
    cmd(c, &["ZADD", "bull:mail:delayed", "99999", "6"]).await;
    cmd(c, &["ZADD", "bull:mail:waiting-children", "0", "7"]).await;
    assert_eq!(
        reading(c, "mail", QueueFormat::Bullmq).await,
        Lengths {
            queued: 4,
            in_flight: 1
        }
    );
    // Pausing (BullMQ's pause-7.lua): `wait` renamed to `paused`, `paused` set in `meta`.
    cmd(c, &["RENAME", "bull:mail:wait", "bull:mail:paused"]).await;
    cmd(c, &["HSET", "bull:mail:meta", "paused", "1"]).await;
    assert_eq!(
        reading(c, "mail", QueueFormat::Bullmq).await,
        Lengths {
            queued: 0,
            in_flight: 1
        }
    );
    // Another prefix: `queue: <prefix>:<name>`.
    cmd(c, &["LPUSH", "app:mail:wait", "1"]).await;
    assert_eq!(
        reading(c, "app:mail", QueueFormat::Bullmq).await,
        Lengths {
            queued: 1,
            in_flight: 0
        }
    );
}
