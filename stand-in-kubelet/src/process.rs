//! A container's main process: PID 1 of a new PID namespace, inside the container's cgroups, with
//! its output in the container's log file.
//!
//! The process tree is the launcher (`qscaler-kubelet __launch`, see [`super::launcher`]: joins
//! the cgroups, unshares, forks, waits, exits with the child's status) → the container's command
//! as PID 1. Signals go to PID 1 directly (the launcher does not forward them). If the launcher
//! dies, the kernel SIGKILLs PID 1, and the whole namespace dies with its init.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::launcher::{command_line, LaunchArgs};

/// What to run and where.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The launcher executable (the kubelet binary itself).
    pub launcher: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub log: PathBuf,
    /// Truncate the log first (a container's first start) or append (a restart).
    pub truncate_log: bool,
    /// `cgroup.procs` files to join before exec.
    pub cgroup_procs: Vec<PathBuf>,
    /// The hostname in the container's own UTS namespace (the pod's name).
    pub hostname: Option<String>,
}

/// A started container process.
#[derive(Debug)]
pub struct Running {
    child: tokio::process::Child,
    /// Host pid of the launcher.
    pid: u32,
}

/// Exit code as a container runtime reports it: the code, or 128 + the killing signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
    }
}

impl Running {
    pub fn start(launch: &Launch) -> io::Result<Running> {
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true);
        if launch.truncate_log {
            opts.write(true).truncate(true);
        } else {
            opts.append(true);
        }
        let log = opts.open(&launch.log)?;
        let err = log.try_clone()?;
        let mut cmd = tokio::process::Command::new(&launch.launcher);
        cmd.args(command_line(&LaunchArgs {
            cgroup_procs: launch.cgroup_procs.clone(),
            hostname: launch.hostname.clone(),
            argv: launch.argv.clone(),
        }))
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(false);
        let child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the container process exited before it was seen"))?;
        Ok(Running { child, pid })
    }

    /// Host pid of the launcher.
    pub fn wrapper_pid(&self) -> u32 {
        self.pid
    }

    /// Host pid of the namespace's init (the container's command), once the launcher forked it.
    pub fn init_pid(&self) -> Option<u32> {
        init_pid_of(self.pid)
    }

    /// Send `sig` to the container's PID 1. Waits up to a second for the launcher to fork it; if
    /// it never appears, SIGKILL goes to the launcher instead (which takes the child with it).
    pub async fn signal(&self, sig: Signal) {
        for _ in 0..20 {
            if let Some(init) = self.init_pid() {
                let _ = kill(Pid::from_raw(init as i32), sig);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::debug!(
            pid = self.pid,
            "no namespace init found; signalling the wrapper"
        );
        let _ = kill(Pid::from_raw(self.pid as i32), sig);
        if sig != Signal::SIGKILL {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
    }

    /// Wait for the container to end; its exit code.
    pub async fn wait(&mut self) -> io::Result<i32> {
        self.child.wait().await.map(exit_code)
    }
}

/// The first child of `pid`, from procfs.
pub fn init_pid_of(pid: u32) -> Option<u32> {
    let path = Path::new("/proc")
        .join(pid.to_string())
        .join("task")
        .join(pid.to_string())
        .join("children");
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_runtime_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }
}
