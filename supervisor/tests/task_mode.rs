//! Task mode against a real redis-server started by the test on a free loopback port (with an
//! append-only file, fsync always, so a `kill -9` loses no acknowledged write).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use redis::Commands;

const T: Duration = Duration::from_secs(30);

struct Redis {
    port: u16,
    dir: PathBuf,
    server: Option<Guard>,
}

impl Redis {
    fn start(name: &str) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            port,
            dir: scratch(name),
            server: None,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.server = Some(Guard(child));
        wait_for(T, "redis-server to answer", || {
            let mut c = self.client().get_connection().ok()?;
            redis::cmd("PING").query::<String>(&mut c).ok()
        });
    }

    fn kill(&mut self) {
        if let Some(mut g) = self.server.take() {
            g.0.kill().unwrap();
            g.0.wait().unwrap();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    fn conn(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }
}

fn lines(path: &Path) -> Vec<String> {
    read(path).lines().map(str::to_owned).collect()
}

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
    let _: () = c.lpush("jobs:processing:p1", "left-over").unwrap();
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
        (c.llen::<_, usize>("jobs:processing:p1").unwrap() == 0).then_some(())
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
        c.lrange::<_, Vec<String>>("q:dead", 0, -1).unwrap(),
        vec!["bad"]
    );
    assert!(!c.hexists::<_, _, bool>("q:retries", "bad").unwrap());
    wait_for(T, "the processing list to empty", || {
        (c.llen::<_, usize>("q:processing:p1").unwrap() == 0).then_some(())
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
        (c.llen::<_, usize>("m:dead").unwrap() == 1).then_some(())
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
            && c.llen::<_, usize>("r:processing:p1").unwrap() == 0)
            .then_some(())
    });
    kill(sup.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut sup, Duration::from_secs(5))), 0);
}

#[test]
fn sigterm_during_a_task_lets_it_finish_unless_it_is_cut() {
    // The task handles SIGTERM by finishing: it is acknowledged, exit 0.
    let redis = Redis::start("redis-term");
    let dir = redis.dir.clone();
    let started = dir.join("started");
    let out = dir.join("out");
    let mut c = redis.conn();
    let _: () = c.lpush("s", "one").unwrap();
    let _: () = c.lpush("s", "two").unwrap();
    let script = format!(
        "trap 'echo term >> {o}' TERM; p=$(cat); touch {s}; sleep 1 & wait $!; wait $!; echo $p >> {o}",
        o = out.display(),
        s = started.display()
    );
    let mut sup = task_supervisor(&redis, "s", &[], &script);
    wait_file(&started, T);
    kill(sup.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut sup, T)), 0);
    assert_eq!(lines(&out), vec!["term", "one"]);
    // The second task was never taken.
    assert_eq!(c.lrange::<_, Vec<String>>("s", 0, -1).unwrap(), vec!["two"]);
    assert_eq!(c.llen::<_, usize>("s:processing:p1").unwrap(), 0);

    // A task that dies of the SIGTERM goes back to the queue's head: nothing is lost.
    std::fs::remove_file(&started).unwrap();
    let script = format!("p=$(cat); touch {s}; sleep 10", s = started.display());
    let mut sup = task_supervisor(&redis, "s", &[], &script);
    wait_file(&started, T);
    kill(sup.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut sup, T)), 143);
    assert_eq!(c.lrange::<_, Vec<String>>("s", 0, -1).unwrap(), vec!["two"]);
    assert_eq!(c.llen::<_, usize>("s:processing:p1").unwrap(), 0);
}
