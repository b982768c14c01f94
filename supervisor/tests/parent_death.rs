//! `--parent-death-signal` (`-p`, tini's): qsupervisor started by an intermediate process that is
//! SIGKILLed gets the signal from the kernel and handles it as any other. Its own binary: the test
//! process becomes a subreaper, so the orphaned qsupervisor is reparented to it and its exit status
//! can be read.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(10);

#[test]
fn parent_death_signal_term_drains_and_exits() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let dir = scratch("pdeathsig");
    let log = dir.join("log");
    let ready = dir.join("ready");
    // The worker: its warm shutdown (TERM) is logged, then it finishes.
    let worker = format!(
        "trap 'echo TERM >> {log}; exit 0' TERM; touch {ready}; while :; do sleep 0.2 & wait $!; done",
        log = log.display(),
        ready = ready.display()
    );
    let mut intermediate = Guard(
        Command::new("sh")
            .args(["-c", "\"$@\" & wait", "sh"])
            .arg(bin())
            .args(["-p", "TERM", "--sample-interval", "0", "--", "sh", "-c"])
            .arg(&worker)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let parent = intermediate.id() as i32;
    let sup = wait_for(T, "qsupervisor under the intermediate", || {
        children(parent).first().map(|p| p.pid)
    });
    wait_file(&ready, T);
    assert!(read(&log).is_empty());

    kill(parent, Signal::SIGKILL);
    intermediate.wait().unwrap();

    // The kernel's SIGTERM is a drain: the worker gets its warm-shutdown signal, finishes, and
    // qsupervisor exits with its code.
    let status = wait_for(
        T,
        "qsupervisor to exit after its parent died",
        || match waitpid(Pid::from_raw(sup), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => None,
            Ok(s) => Some(s),
            Err(e) => panic!("waitpid({sup}): {e} (not reparented to the test process?)"),
        },
    );
    assert_eq!(status, WaitStatus::Exited(Pid::from_raw(sup), 0));
    assert_eq!(read(&log).lines().collect::<Vec<_>>(), vec!["TERM"]);
}
