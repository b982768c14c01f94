//! Task mode on a Redis stream (`--queue-format stream`) against a real redis-server started by the
//! test on a free loopback port: the payload is the entry's `task` field, entries are acknowledged,
//! retried and dead-lettered, and a cut entry goes to the group's pool where another worker finds it.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use redis::{Commands, Value};

const T: Duration = Duration::from_secs(30);
const GROUP: &str = "qscaler";

fn add(c: &mut redis::Connection, stream: &str, fields: &[(&str, &str)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query(c).unwrap()
}

/// (entry id, consumer) of every pending entry of the group.
fn pending(c: &mut redis::Connection, stream: &str) -> Vec<(String, String)> {
    let v: Vec<(String, String, i64, i64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(100)
        .query(c)
        .unwrap();
    v.into_iter().map(|(id, who, _, _)| (id, who)).collect()
}

/// The field lists of a stream's entries.
fn fields(c: &mut redis::Connection, stream: &str) -> Vec<Vec<String>> {
    let v: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(c)
        .unwrap();
    v.into_iter().map(|(_, f)| f).collect()
}

fn consumers(c: &mut redis::Connection, stream: &str) -> usize {
    let v: Vec<Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(GROUP)
        .query(c)
        .unwrap();
    v.len()
}

fn stream_supervisor(redis: &Redis, queue: &str, pod: &str, extra: &[&str], script: &str) -> Guard {
    let url = redis.url();
    let mut args = vec![
        "--task",
        "--queue-format",
        "stream",
        "--redis-url",
        &url,
        "--queue",
        queue,
        "--pod-name",
        pod,
        "--sample-interval",
        "0",
    ];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", script]);
    plain(&args)
}

#[test]
fn each_entry_runs_once_with_its_task_field_on_stdin() {
    let redis = Redis::start("stream-once");
    let out = redis.dir.join("out");
    let mut c = redis.conn();
    // A group and an entry left pending for p1 by a previous container: it runs first.
    let _: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("ev")
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut c)
        .unwrap();
    add(&mut c, "ev", &[("task", "left-over")]);
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("p1")
        .arg("STREAMS")
        .arg("ev")
        .arg(">")
        .query(&mut c)
        .unwrap();
    for i in 1..=10 {
        add(&mut c, "ev", &[("task", &format!("task-{i}"))]);
    }
    add(&mut c, "ev", &[("other", "no task field")]);
    let mut sup = stream_supervisor(
        &redis,
        "ev",
        "p1",
        &[],
        &format!("cat >> {o}; echo >> {o}", o = out.display()),
    );
    wait_for(T, "11 tasks", || (lines(&out).len() >= 11).then_some(()));
    let mut want = vec!["left-over".to_string()];
    want.extend((1..=10).map(|i| format!("task-{i}")));
    assert_eq!(lines(&out), want);
    wait_for(T, "nothing pending", || {
        pending(&mut c, "ev").is_empty().then_some(())
    });
    // The entry without a task field is dead-lettered, never run.
    let dead = fields(&mut c, "{ev}:dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0][0], "id");
    // The 11 runs are timed for the operator's drain target; the entry never run is not.
    let tasks: i64 = c.hget("{ev}:stats", "tasks").unwrap();
    assert_eq!(tasks, 11);
    // Idle and told to stop: exits 0 at once, leaving the group and the registry.
    kill(sup.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut sup, Duration::from_secs(3))), 0);
    assert_eq!(lines(&out).len(), 11);
    assert_eq!(consumers(&mut c, "ev"), 0);
    assert_eq!(c.scard::<_, usize>("{ev}:consumers").unwrap(), 0);
}

#[test]
fn a_failing_entry_is_retried_then_dead_lettered() {
    let redis = Redis::start("stream-dead");
    let attempts = redis.dir.join("attempts");
    let mut c = redis.conn();
    let bad = {
        add(&mut c, "q", &[("task", "good-1")]);
        let bad = add(&mut c, "q", &[("task", "bad")]);
        add(&mut c, "q", &[("task", "good-2")]);
        bad
    };
    let script = format!(
        "read p; echo $p >> {}; [ \"$p\" != bad ]",
        attempts.display()
    );
    let mut sup = stream_supervisor(&redis, "q", "p1", &["--max-retries", "2"], &script);
    wait_for(T, "good-2 to run", || {
        lines(&attempts)
            .contains(&"good-2".to_string())
            .then_some(())
    });
    assert_eq!(
        lines(&attempts),
        vec!["good-1", "bad", "bad", "bad", "good-2"]
    );
    wait_for(T, "nothing pending", || {
        pending(&mut c, "q").is_empty().then_some(())
    });
    assert_eq!(
        fields(&mut c, "{q}:dead"),
        vec![vec!["task", "bad", "id", &bad, "group", GROUP]]
    );
    assert!(!c.hexists::<_, _, bool>("{q}:retries", &bad).unwrap());
    kill(sup.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut sup, Duration::from_secs(3))), 0);
}

#[test]
fn a_cut_entry_goes_to_the_pool_and_another_worker_runs_it() {
    let redis = Redis::start("stream-int");
    let started = redis.dir.join("started");
    let out = redis.dir.join("out");
    let mut c = redis.conn();
    let one = add(&mut c, "i", &[("task", "one")]);
    let script = format!("p=$(cat); touch {s}; exec sleep 10", s = started.display());
    let mut sup = stream_supervisor(&redis, "i", "p1", &[], &script);
    wait_file(&started, T);
    // SIGINT cuts the task: the entry is given back, to the pool, not re-added.
    kill(sup.id() as i32, Signal::SIGINT);
    assert_eq!(code(wait_exit(&mut sup, Duration::from_secs(5))), 130);
    assert_eq!(
        pending(&mut c, "i"),
        vec![(one.clone(), "qscaler:returned".to_string())]
    );
    let len: usize = redis::cmd("XLEN").arg("i").query(&mut c).unwrap();
    assert_eq!(len, 1, "given back without a copy");
    let mut p2 = stream_supervisor(
        &redis,
        "i",
        "p2",
        &[],
        &format!("cat >> {o}; echo >> {o}", o = out.display()),
    );
    wait_for(T, "p2 to run it", || (lines(&out) == ["one"]).then_some(()));
    wait_for(T, "nothing pending", || {
        pending(&mut c, "i").is_empty().then_some(())
    });
    kill(p2.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut p2, Duration::from_secs(3))), 0);
}
