//! The container process layer alone, without a cluster: the launcher forks PID 1 of a new PID
//! namespace, reports exit codes truthfully and delivers signals to the namespace's init.

use std::time::{Duration, Instant};

use qscaler_stand_in_kubelet::process::{Launch, Running};

const T: Duration = Duration::from_secs(60);

/// The container process layer alone, without the cluster: PID 1, exit codes (including a
/// SIGKILLed PID 1, which `unshare` 2.38 misreports), and signals reaching the namespace's init.
#[tokio::test]
async fn launcher_runs_pid_one_and_reports_signals() {
    use nix::sys::signal::Signal;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (PID namespaces)"
    );
    let dir = std::env::temp_dir().join(format!("qscaler-launcher-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let launch = |script: &str, log: &str| Launch {
        launcher: env!("CARGO_BIN_EXE_qscaler-kubelet").into(),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
        cwd: dir.clone(),
        log: dir.join(log),
        truncate_log: true,
        cgroup_procs: vec![],
        hostname: Some("launched".into()),
    };
    let log_has = |log: &str, needle: &str| {
        let path = dir.join(log);
        let needle = needle.to_string();
        async move {
            let deadline = Instant::now() + T;
            while !std::fs::read_to_string(&path).is_ok_and(|t| t.contains(&needle)) {
                assert!(
                    Instant::now() < deadline,
                    "{needle:?} in {} within {T:?}",
                    path.display()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let mut p =
        Running::start(&launch("echo pid=$$ host=$(hostname); exit 3", "a.log")).expect("start");
    assert_eq!(p.wait().await.expect("wait"), 3);
    assert_eq!(
        std::fs::read_to_string(dir.join("a.log")).expect("log"),
        "pid=1 host=launched\n"
    );

    let mut p = Running::start(&launch("nonexistent-command-xyz", "n.log")).expect("start");
    assert_eq!(p.wait().await.expect("wait"), 127);

    // A PID 1 without a handler ignores SIGTERM from outside its namespace; SIGKILL ends it: 137.
    let mut p = Running::start(&launch("echo up; sleep 30 & wait", "b.log")).expect("start");
    log_has("b.log", "up").await;
    p.signal(Signal::SIGTERM).await;
    let r = tokio::time::timeout(Duration::from_millis(500), p.wait()).await;
    assert!(
        r.is_err(),
        "PID 1 without a TERM handler must ignore SIGTERM"
    );
    p.signal(Signal::SIGKILL).await;
    assert_eq!(p.wait().await.expect("wait"), 137);
    assert_eq!(
        std::fs::read_to_string(dir.join("b.log")).expect("log"),
        "up\n"
    );

    // With a handler, SIGTERM is delivered.
    let script = "trap 'echo got TERM; exit 7' TERM; echo up; sleep 30 & wait";
    let mut p = Running::start(&launch(script, "c.log")).expect("start");
    log_has("c.log", "up").await;
    p.signal(Signal::SIGTERM).await;
    assert_eq!(p.wait().await.expect("wait"), 7);
    let _ = std::fs::remove_dir_all(&dir);
}
