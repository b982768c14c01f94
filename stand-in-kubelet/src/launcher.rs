//! The container launcher:
//! `qscaler-kubelet __launch [--cgroup PROCS_FILE]... [--hostname NAME] -- COMMAND...`.
//!
//! What `unshare --pid --fork --mount-proc --kill-child` does, plus joining the container's
//! cgroups first, a UTS namespace with the pod's name as hostname, and an exit status that is always right: util-linux 2.38's `unshare` exits 1
//! (with "sigprocmask unblock failed" on stderr) when its child is SIGKILLed, so an OOM kill or a
//! grace-period kill of PID 1 would be misreported. This launcher exits with the child's code, or
//! 128 + the signal that killed it.
//!
//! It runs single-threaded (before any runtime starts), so forking is sound. The only `unsafe`
//! of the kubelet is the `fork` here.

use std::ffi::CString;
use std::path::PathBuf;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{execvp, fork, getpid, ForkResult};

/// The first argument that selects launcher mode.
pub const LAUNCH_ARG: &str = "__launch";

/// Parsed launcher arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchArgs {
    pub cgroup_procs: Vec<PathBuf>,
    pub hostname: Option<String>,
    pub argv: Vec<String>,
}

/// Parse what follows `__launch`.
pub fn parse(args: &[String]) -> Result<LaunchArgs, String> {
    let mut cgroup_procs = Vec::new();
    let mut hostname = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--cgroup" => cgroup_procs.push(PathBuf::from(
                it.next().ok_or("--cgroup needs a cgroup.procs path")?,
            )),
            "--hostname" => hostname = Some(it.next().ok_or("--hostname needs a name")?.clone()),
            "--" => {
                let argv: Vec<String> = it.cloned().collect();
                if argv.is_empty() {
                    return Err("no command after --".into());
                }
                return Ok(LaunchArgs {
                    cgroup_procs,
                    hostname,
                    argv,
                });
            }
            other => return Err(format!("unexpected launcher argument {other:?}")),
        }
    }
    Err("missing -- COMMAND".into())
}

/// The arguments (after the launcher executable) that run `args.argv`.
pub fn command_line(args: &LaunchArgs) -> Vec<String> {
    let mut v = vec![LAUNCH_ARG.to_string()];
    for p in &args.cgroup_procs {
        v.push("--cgroup".into());
        v.push(p.display().to_string());
    }
    if let Some(h) = &args.hostname {
        v.push("--hostname".into());
        v.push(h.clone());
    }
    v.push("--".into());
    v.extend(args.argv.iter().cloned());
    v
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("qscaler-kubelet launcher: {what}: {e}");
    std::process::exit(125)
}

/// Run the launcher; never returns. Exit codes: the command's, 128+N if killed by signal N,
/// 127 if the command was not found, 126 if it could not be executed, 125 if setup failed.
pub fn run(args: LaunchArgs) -> ! {
    let me = getpid().to_string();
    for f in &args.cgroup_procs {
        if let Err(e) = std::fs::write(f, &me) {
            fail(&format!("joining cgroup {}", f.display()), e);
        }
    }
    let argv: Vec<CString> = match args
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect()
    {
        Ok(v) => v,
        Err(e) => fail("command has a NUL byte", e),
    };
    let mut flags = CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS;
    if args.hostname.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if let Err(e) = unshare(flags) {
        fail("unshare(CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWUTS)", e);
    }
    if let Some(h) = &args.hostname {
        if let Err(e) = nix::unistd::sethostname(h) {
            fail("sethostname", e);
        }
    }
    // SAFETY: this process is single-threaded (launcher mode runs before any runtime or thread
    // starts), so the child may do anything until exec.
    match unsafe { fork() } {
        Err(e) => fail("fork", e),
        Ok(ForkResult::Child) => child(&argv),
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => fail("waitpid", e),
            }
        },
    }
}

/// PID 1 of the new namespace: die with the launcher, get a private /proc, exec.
fn child(argv: &[CString]) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if let Err(e) = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        fail("making / private", e);
    }
    if let Err(e) = mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        fail("mounting /proc", e);
    }
    let e = match execvp(&argv[0], argv) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    eprintln!(
        "qscaler-kubelet launcher: exec {}: {e}",
        argv[0].to_string_lossy()
    );
    std::process::exit(if e == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_parses_back() {
        for hostname in [None, Some("pod-1".to_string())] {
            let args = LaunchArgs {
                cgroup_procs: vec![
                    PathBuf::from("/a/cgroup.procs"),
                    PathBuf::from("/b/cgroup.procs"),
                ],
                hostname,
                argv: vec!["sh".to_string(), "-c".into(), "--cgroup".into()],
            };
            let line = command_line(&args);
            assert_eq!(line[0], LAUNCH_ARG);
            assert_eq!(parse(&line[1..]), Ok(args));
        }
    }

    #[test]
    fn bad_command_lines() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--".into()]).is_err());
        assert!(parse(&["--cgroup".into()]).is_err());
        assert!(parse(&["x".into(), "--".into(), "sh".into()]).is_err());
    }
}
