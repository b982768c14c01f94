//! Task mode against a real redis-server started by the test on a free loopback port (with an
//! append-only file, fsync always, so a `kill -9` loses no acknowledged write).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use redis::Commands;

const T: Duration = Duration::from_secs(30);

fn task_supervisor(redis: &Redis, queue: &str, extra: &[&str], script: &str) -> Guard {
    let url = redis.url();
    let mut args = vec![
        "--task",
        "--redis-url",
        &url,
        "--queue",
        queue,
        "--pod-name",
        "p1",
        "--sample-interval",
        "0",
    ];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", script]);
    plain(&args)
}

#[test]
fn each_task_runs_once_with_its_payload_on_stdin() {
    let redis = Redis::start("redis-once");
    let out = redis.dir.join("out");
    let mut c = redis.conn();
    // Left over from a previous run of this pod's container: runs first.
    let _: () = c.lpush("{jobs}:processing:p1", "left-over").unwrap();
    for i in 1..=20 {
        let _: () = c.lpush("jobs", format!("task-{i}")).unwrap();
    }
    let mut sup = task_supervisor(
        &redis,
        "jobs",
        &[],
        &format!("cat >> {o}; echo >> {o}", o = out.display()),
    );
    wait_for(T, "21 tasks", || (lines(&out).len() >= 21).then_some(()));
    let mut want = vec!["left-over".to_string()];
    want.extend((1..=20).map(|i| format!("task-{i}")));
    // FIFO with LPUSH producers, each exactly once.
    assert_eq!(lines(&out), want);
    wait_for(T, "the processing list to empty", || {
        (c.llen::<_, usize>("{jobs}:processing:p1").unwrap() == 0).then_some(())
    });
    assert_eq!(c.llen::<_, usize>("jobs").unwrap(), 0);
    // Idle and told to stop: exits 0 at once (the blocked BLMOVE is woken).
    kill(sup.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut sup, Duration::from_secs(3))), 0);
    assert_eq!(lines(&out).len(), 21);
}

#[test]
fn a_failing_task_is_retried_then_dead_lettered() {
    let redis = Redis::start("redis-dead");
    let attempts = redis.dir.join("attempts");
    let mut c = redis.conn();
    for p in ["good-1", "bad", "good-2"] {
        let _: () = c.lpush("q", p).unwrap();
    }
    let script = format!(
        "read p; echo $p >> {}; [ \"$p\" != bad ]",
        attempts.display()
    );
    let mut sup = task_supervisor(&redis, "q", &["--max-retries", "2"], &script);
    wait_for(T, "good-2 to run", || {
        lines(&attempts)
            .contains(&"good-2".to_string())
            .then_some(())
    });
    assert_eq!(
        lines(&attempts),
        vec!["good-1", "bad", "bad", "bad", "good-2"]
    );
    assert_eq!(
        c.lrange::<_, Vec<String>>("{q}:dead", 0, -1).unwrap(),
        vec!["bad"]
    );
    assert!(!c.hexists::<_, _, bool>("{q}:retries", "bad").unwrap());
    wait_for(T, "the processing list to empty", || {
        (c.llen::<_, usize>("{q}:processing:p1").unwrap() == 0).then_some(())
    });
    kill(sup.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut sup, Duration::from_secs(3))), 0);
}

#[test]
fn a_missing_command_counts_as_a_failure() {
    let redis = Redis::start("redis-127");
    let mut c = redis.conn();
    let _: () = c.lpush("m", "x").unwrap();
    let url = redis.url();
    let mut sup = plain(&[
        "--task",
        "--redis-url",
        &url,
        "--queue",
        "m",
        "--pod-name",
        "p1",
        "--max-retries",
        "1",
        "--sample-interval",
        "0",
        "--",
        "/no/such/handler",
    ]);
    wait_for(T, "the task to be dead-lettered", || {
        (c.llen::<_, usize>("{m}:dead").unwrap() == 1).then_some(())
    });
    kill(sup.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut sup, Duration::from_secs(3))), 0);
}

#[test]
fn a_redis_restart_loses_nothing() {
    let mut redis = Redis::start("redis-restart");
    let out = redis.dir.join("out");
    let mut c = redis.conn();
    let n = 40;
    for i in 1..=n {
        let _: () = c.lpush("r", format!("t{i}")).unwrap();
    }
    let script = format!("p=$(cat); sleep 0.05; echo $p >> {}", out.display());
    let mut sup = task_supervisor(&redis, "r", &[], &script);
    wait_for(T, "some tasks to be done", || {
        (lines(&out).len() >= 10).then_some(())
    });
    redis.kill();
    // Tasks keep being finished while Redis is away? Only the one in flight; then it waits.
    std::thread::sleep(Duration::from_millis(800));
    redis.restart();
    let mut c = redis.conn();
    wait_for(
        Duration::from_secs(60),
        "every task after the restart",
        || {
            let mut seen = lines(&out);
            seen.sort();
            seen.dedup();
            (seen.len() == n).then_some(())
        },
    );
    let mut seen = lines(&out);
    seen.sort();
    seen.dedup();
    let mut want: Vec<String> = (1..=n).map(|i| format!("t{i}")).collect();
    want.sort();
    assert_eq!(seen, want);
    wait_for(T, "queue and processing list to empty", || {
        (c.llen::<_, usize>("r").unwrap() == 0
            && c.llen::<_, usize>("{r}:processing:p1").unwrap() == 0)
            .then_some(())
    });
    kill(sup.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut sup, Duration::from_secs(5))), 0);
}

/// The moment (seconds since the epoch, fractional) each line was written, after its text.
fn stamped(path: &Path) -> Vec<(String, f64)> {
    lines(path)
        .into_iter()
        .filter_map(|l| {
            let (text, at) = l.rsplit_once(' ')?;
            Some((text.to_owned(), at.parse().ok()?))
        })
        .collect()
}

fn epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn sigterm_mid_task_is_a_drain_the_task_finishes_and_no_new_one_is_taken() {
    // The kubelet's SIGTERM with the deadline far away (no pod: QSCALER_MAX_TASK_SECONDS 20 + 10 s).
    let redis = Redis::start("redis-term");
    let dir = redis.dir.clone();
    let out = dir.join("out");
    let mut c = redis.conn();
    let _: () = c.lpush("s", "one").unwrap();
    let _: () = c.lpush("s", "two").unwrap();
    // No trap: a SIGTERM reaching the task would kill it.
    let script = format!(
        "p=$(cat); echo start $p >> {o}; sleep 1.5; echo end $p >> {o}",
        o = out.display()
    );
    let url = redis.url();
    let mut sup = plain_with(
        &[
            "--task",
            "--redis-url",
            &url,
            "--queue",
            "s",
            "--pod-name",
            "p1",
            "--sample-interval",
            "0",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[("QSCALER_MAX_TASK_SECONDS", "20")],
    );
    wait_for(T, "the first task to start", || {
        (!lines(&out).is_empty()).then_some(())
    });
    kill(sup.id() as i32, Signal::SIGTERM);
    // A second SIGTERM (a repeated deletion) changes nothing.
    kill(sup.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut sup, T)), 0);
    assert_eq!(lines(&out), vec!["start one", "end one"]);
    // The second task was never taken, the first was acknowledged.
    assert_eq!(c.lrange::<_, Vec<String>>("s", 0, -1).unwrap(), vec!["two"]);
    assert_eq!(c.llen::<_, usize>("{s}:processing:p1").unwrap(), 0);
}

#[test]
fn a_task_longer_than_the_grace_is_signalled_just_before_the_deadline_and_returned_once() {
    // As PID 1. No pod to read: the grace is QSCALER_MAX_TASK_SECONDS 1 + 10 s = 11 s after SIGTERM, so
    // the task gets SIGTERM 2 s and SIGKILL 1 s before that.
    let redis = Redis::start("redis-grace");
    let dir = redis.dir.clone();
    let out = dir.join("out");
    let mut c = redis.conn();
    let _: () = c.lpush("g", "long").unwrap();
    let _: () = c.lpush("g", "next").unwrap();
    // It ignores SIGTERM (records it) and would run for ever.
    let script = format!(
        "trap 'echo term $(date +%s.%N) >> {o}' TERM; p=$(cat); echo start $p $(date +%s.%N) >> {o}; \
         while :; do sleep 30 & wait $!; done",
        o = out.display()
    );
    let url = redis.url();
    let mut sup = in_namespace_with(
        &[
            "--task",
            "--redis-url",
            &url,
            "--queue",
            "g",
            "--pod-name",
            "p1",
            "--sample-interval",
            "0",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[("QSCALER_MAX_TASK_SECONDS", "1")],
    );
    let pid = supervisor_of(&sup);
    wait_for(T, "the task to start", || {
        (!lines(&out).is_empty()).then_some(())
    });
    let sent = epoch();
    kill(pid, Signal::SIGTERM);
    // Nothing reaches the task at once.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stamped(&out).len(), 1, "{:?}", lines(&out));
    let status = wait_exit(&mut sup, Duration::from_secs(15));
    let exited = epoch() - sent;
    let events = stamped(&out);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, "start long");
    assert_eq!(events[1].0, "term");
    let term_after = events[1].1 - sent;
    assert!(
        (8.5..10.5).contains(&term_after),
        "the task got SIGTERM {term_after:.2} s after the supervisor (want ~9 s)"
    );
    assert!(
        exited < 11.0,
        "exited {exited:.2} s after SIGTERM, after the deadline"
    );
    // unshare passes on the supervisor's code: the task was SIGKILLed.
    assert_eq!(code(status), 137);
    // Back at the head of the queue exactly once; nothing in processing, no retry counted.
    assert_eq!(
        c.lrange::<_, Vec<String>>("g", 0, -1).unwrap(),
        vec!["next", "long"]
    );
    assert_eq!(c.llen::<_, usize>("{g}:processing:p1").unwrap(), 0);
    assert!(!c.hexists::<_, _, bool>("{g}:retries", "long").unwrap());
}

#[test]
fn sigint_cuts_the_task_at_once_and_it_goes_back_to_the_queue() {
    let redis = Redis::start("redis-int");
    let started = redis.dir.join("started");
    let mut c = redis.conn();
    let _: () = c.lpush("i", "one").unwrap();
    let _: () = c.lpush("i", "two").unwrap();
    let script = format!("p=$(cat); touch {s}; exec sleep 10", s = started.display());
    let mut sup = task_supervisor(&redis, "i", &[], &script);
    wait_file(&started, T);
    kill(sup.id() as i32, Signal::SIGINT);
    assert_eq!(code(wait_exit(&mut sup, Duration::from_secs(5))), 130);
    assert_eq!(
        c.lrange::<_, Vec<String>>("i", 0, -1).unwrap(),
        vec!["two", "one"]
    );
    assert_eq!(c.llen::<_, usize>("{i}:processing:p1").unwrap(), 0);
}
