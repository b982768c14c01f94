//! Task mode with POD_NAME/POD_NAMESPACE set but no Kubernetes API answering (a kubeconfig naming
//! a closed port): qsupervisor keeps trying, takes no task from a real redis-server meanwhile (its
//! pod may be told to drain), and a SIGTERM still ends it at once with 0. The e2e suite
//! (tests/tests/supervisor_api_e2e.rs) shows the API arriving later.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use redis::Commands;

const T: Duration = Duration::from_secs(30);

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn task_mode_takes_no_task_before_its_pod_is_read_and_still_stops_on_sigterm() {
    let dir = scratch("api-unreachable");
    let redis_port = closed_port();
    let _redis = Guard(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed"),
    );
    let url = format!("redis://127.0.0.1:{redis_port}/0");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = wait_for(T, "redis-server to answer", || {
        let mut c = client.get_connection().ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    });
    let _: () = conn.lpush("jobs", "t1").unwrap();

    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n",
            closed_port()
        ),
    )
    .unwrap();
    let (log, ran) = (dir.join("log"), dir.join("ran"));
    let mut sup = Guard(
        Command::new(BIN)
            .args(["--task", "--redis-url", &url, "--queue", "jobs"])
            .args(["--sample-interval", "0", "--"])
            .args(["sh", "-c", &format!("cat > {}", ran.display())])
            .env("POD_NAME", "p1")
            .env("POD_NAMESPACE", "ns1")
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );

    // Three failed attempts (200 ms, 400 ms... apart): it is retrying, not a plain init. No task
    // is taken meanwhile (checked on every poll).
    wait_for(T, "three failed attempts to read the pod", || {
        let queued: usize = conn.llen("jobs").unwrap();
        let processing: usize = conn.llen("{jobs}:processing:ns1/p1").unwrap();
        assert!(
            queued == 1 && processing == 0 && !ran.exists(),
            "a task was taken without the pod: queue {queued}, processing {processing}\n{}",
            read(&log)
        );
        (read(&log).matches("Kubernetes API not usable yet").count() >= 3).then_some(())
    });
    assert!(sup.try_wait().unwrap().is_none(), "{}", read(&log));

    kill(sup.id() as i32, Signal::SIGTERM);
    let status = wait_exit(&mut sup, Duration::from_secs(5));
    let text = read(&log);
    assert_eq!(code(status), 0, "{text}");
    assert!(
        text.contains("shut down before our pod could be read: no task was taken"),
        "{text}"
    );
    assert!(!ran.exists(), "{text}");
    let left: Vec<String> = conn.lrange("jobs", 0, -1).unwrap();
    assert_eq!(left, ["t1"], "{text}");
}
