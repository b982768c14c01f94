//! Helpers of the black-box tests: start the built binary (in a PID namespace or not), find its
//! processes in /proc, wait for conditions with deadlines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use qsupervisor::proctree::{self, ProcStat};

mod redis_server;
#[allow(unused_imports)] // Only the Redis tests use them.
pub use redis_server::{lines, Redis};

pub const BIN: &str = env!("CARGO_BIN_EXE_qsupervisor");

/// The binary under test: QSCALER_TEST_QSUPERVISOR runs another build (e.g. an older one, to see a
/// test fail), else this package's.
pub fn bin() -> String {
    std::env::var("QSCALER_TEST_QSUPERVISOR").unwrap_or_else(|_| BIN.to_owned())
}

/// A fresh scratch directory per test: `<tmp>/qsup-<name>-<pid>`. The tests' processes may outlive
/// a test (a dropped guard cannot wait for them), so directories are not removed when a test ends;
/// instead each new one removes those left by test processes that no longer run, and a machine
/// keeps at most one run's worth (some hold a copy of the binary, ~200 MB in a debug build).
pub fn scratch(name: &str) -> PathBuf {
    remove_dead_runs_scratch();
    let d = std::env::temp_dir().join(format!("qsup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Removes `qsup-*-<pid>` scratch directories whose test process (`<pid>`) is gone.
fn remove_dead_runs_scratch() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name
            .strip_prefix("qsup-")
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed when dropped (a failed test leaves nothing behind; `unshare
/// --kill-child` takes the whole PID namespace with it).
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Guard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// `qsupervisor ARGS` as PID 1 of a new PID namespace (with its own /proc).
pub fn in_namespace(args: &[&str]) -> Guard {
    in_namespace_with(args, &[])
}

/// [`in_namespace`] with extra environment variables (settings an older build ignores, so that a
/// test run against it fails on behaviour, not on an unknown option).
pub fn in_namespace_with(args: &[&str], env: &[(&str, &str)]) -> Guard {
    Guard(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(bin())
            .args(args)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare runs (the tests need root)"),
    )
}

/// `qsupervisor ARGS` as an ordinary process (subreaper mode).
pub fn plain(args: &[&str]) -> Guard {
    plain_with(args, &[])
}

/// [`plain`] with extra environment variables.
pub fn plain_with(args: &[&str], env: &[(&str, &str)]) -> Guard {
    Guard(
        Command::new(bin())
            .args(args)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

pub fn stat(pid: i32) -> Option<ProcStat> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| proctree::parse_stat(&t))
}

pub fn children(pid: i32) -> Vec<ProcStat> {
    proctree::snapshot()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .collect()
}

pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The supervisor's host pid: the child of `unshare`.
pub fn supervisor_of(unshare: &Child) -> i32 {
    let u = unshare.id() as i32;
    wait_for(
        Duration::from_secs(5),
        "the supervisor under unshare",
        || children(u).first().map(|p| p.pid),
    )
}

/// A descendant of `root` whose command line starts with `prefix`.
pub fn find_descendant(root: i32, prefix: &str) -> i32 {
    wait_for(Duration::from_secs(5), prefix, || {
        proctree::descendants(&proctree::snapshot(), root)
            .into_iter()
            .find(|p| cmdline(p.pid).starts_with(prefix))
            .map(|p| p.pid)
    })
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    wait_for(timeout, "the supervisor to exit", || {
        child.try_wait().unwrap()
    })
}

pub fn code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| panic!("exited by a signal: {status:?}"))
}

pub fn wait_file(path: &Path, timeout: Duration) {
    wait_for(timeout, &path.display().to_string(), || {
        path.exists().then_some(())
    });
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn kill(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

/// Pending signals of a process (thread and shared), as a bit set (bit n-1 for signal n).
pub fn pending(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .fold(0, |a, b| a | b)
}
