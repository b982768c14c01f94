//! The operating-system calls of the init loop, each a thin wrapper that turns errno into
//! [`crate::Error`]. Processes are started with `posix_spawn` ([`Program`]), not
//! `std::process::Command`: std keeps the parent's signal mask in the child (it resets SIGPIPE's
//! disposition, not the mask), and a worker that starts with every signal blocked would never see
//! the SIGTERM we forward; emptying the mask in a `pre_exec` hook would force std onto a full
//! `fork`, which costs more than the task itself when the task is short.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::spawn::{posix_spawnp, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::signals::NEVER_BLOCKED;
use crate::{Error, Result};

fn sys<T>(doing: &'static str, r: nix::Result<T>) -> Result<T> {
    r.map_err(|source| Error::Sys { doing, source })
}

/// Every signal the init loop waits for: all of them except the synchronous faults.
pub fn handled_set() -> SigSet {
    let mut set = SigSet::all();
    for s in NEVER_BLOCKED {
        set.remove(s);
    }
    set
}

/// Blocks `set` in the calling thread. Called first thing in `main`, before any thread exists, so
/// every later thread (the agent's runtime, stdin writers) inherits the mask and no signal is ever
/// delivered asynchronously: they are all read from the signalfd.
pub fn block(set: &SigSet) -> Result<()> {
    sys(
        "blocking signals",
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(set), None),
    )
}

/// A non-blocking signalfd for `set` (which must be blocked).
pub fn signal_fd(set: &SigSet) -> Result<SignalFd> {
    sys(
        "creating the signalfd",
        SignalFd::with_flags(set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC),
    )
}

/// The next pending signal, if any.
pub fn next_signal(fd: &SignalFd) -> Result<Option<Signal>> {
    loop {
        match fd.read_signal() {
            Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                Ok(s) => return Ok(Some(s)),
                // A real-time signal: nix has no name for it; nothing forwards it.
                Err(_) => continue,
            },
            Ok(None) => return Ok(None),
            Err(Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::Sys {
                    doing: "reading the signalfd",
                    source: e,
                })
            }
        }
    }
}

/// Makes orphaned descendants reparent to us rather than to the host's init, so we can reap them
/// and wait for them. Not needed (and a no-op) as PID 1.
pub fn become_subreaper() -> Result<()> {
    sys(
        "setting PR_SET_CHILD_SUBREAPER",
        nix::sys::prctl::set_child_subreaper(true),
    )
}

/// Has the kernel send `sig` to us when our parent dies (`PR_SET_PDEATHSIG`). Call it with `sig`
/// blocked, so it arrives on the signalfd. `parent` is our parent as seen first thing in `main`:
/// if it is gone already (it died before the prctl), `sig` is sent to ourselves at once, since the
/// kernel never will.
pub fn set_parent_death_signal(sig: Signal, parent: Pid) -> Result<()> {
    sys(
        "setting PR_SET_PDEATHSIG",
        nix::sys::prctl::set_pdeathsig(Some(sig)),
    )?;
    if nix::unistd::getppid() != parent {
        tracing::warn!("the parent process {parent} is gone already: {sig} to ourselves");
        send(own_pid(), sig)?;
    }
    Ok(())
}

/// Our parent process (0 as PID 1 of a namespace: the parent is outside it).
pub fn parent_pid() -> Pid {
    nix::unistd::getppid()
}

/// An eventfd the agent writes to wake the init loop.
pub fn waker() -> Result<EventFd> {
    sys(
        "creating the eventfd",
        EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC),
    )
}

/// Clears a waker after it woke us.
pub fn clear_waker(fd: &EventFd) {
    // EAGAIN (already clear) is fine.
    let _ = fd.read();
}

/// Waits until one of two descriptors is readable or `timeout` passes (`None`: forever).
/// Returns which ones are readable.
pub fn wait_readable(
    a: BorrowedFd<'_>,
    b: BorrowedFd<'_>,
    timeout: Option<Duration>,
) -> Result<(bool, bool)> {
    let mut fds = [
        PollFd::new(a, PollFlags::POLLIN),
        PollFd::new(b, PollFlags::POLLIN),
    ];
    let t = match timeout {
        None => PollTimeout::NONE,
        // Round up so a deadline is never missed by a fraction of a millisecond.
        Some(d) => {
            PollTimeout::try_from(d.as_millis().saturating_add(1).min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX)
        }
    };
    match nix::poll::poll(&mut fds, t) {
        Ok(_) => {}
        Err(Errno::EINTR) => return Ok((false, false)),
        Err(e) => {
            return Err(Error::Sys {
                doing: "polling",
                source: e,
            })
        }
    }
    let ready = |f: &PollFd<'_>| {
        f.revents().is_some_and(|r| {
            r.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP)
        })
    };
    Ok((ready(&fds[0]), ready(&fds[1])))
}

/// Whether `fd`-like things can be borrowed for [`wait_readable`].
pub fn fd_of<T: AsFd>(t: &T) -> BorrowedFd<'_> {
    t.as_fd()
}

/// Reaps one ended child without blocking (`waitpid(-1, WNOHANG)`): its status,
/// [`Reaped::NoneEnded`] when children exist but none has ended, [`Reaped::NoChildren`] on ECHILD.
pub fn reap_one() -> Result<Reaped> {
    loop {
        match nix::sys::wait::waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Ok(Reaped::NoneEnded),
            Ok(ws) => return Ok(Reaped::Status(ws)),
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => return Ok(Reaped::NoChildren),
            Err(e) => {
                return Err(Error::Sys {
                    doing: "reaping children",
                    source: e,
                })
            }
        }
    }
}

/// One result of [`reap_one`].
#[derive(Debug)]
pub enum Reaped {
    Status(WaitStatus),
    NoneEnded,
    NoChildren,
}

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub fn send(pid: Pid, sig: Signal) -> Result<()> {
    match nix::sys::signal::kill(pid, sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(Error::Sys {
            doing: "sending a signal",
            source: e,
        }),
    }
}

/// Our own pid.
pub fn own_pid() -> Pid {
    nix::unistd::getpid()
}

/// A command prepared once and started any number of times with `posix_spawn` (a `vfork`-like
/// clone, no copy of our page tables): argv and environment as C strings, and the child's signal
/// state. The child gets what `std::process::Command` would give it (our environment plus the
/// extra variables, our stdout and stderr, SIGPIPE back to its default), except the signal mask,
/// which is empty rather than ours.
#[derive(Debug)]
pub struct Program {
    argv: Vec<CString>,
    envp: Vec<CString>,
    attr: PosixSpawnAttr,
}

fn c_string(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

impl Program {
    /// `command` (looked up in `PATH` when it has no `/`), with our environment as it is now plus
    /// `extra_env`; `own_group`: in a new process group of its own (`--signal-group`).
    pub fn new(
        command: &[OsString],
        extra_env: &[(String, OsString)],
        own_group: bool,
    ) -> std::io::Result<Self> {
        if command.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "empty command",
            ));
        }
        let argv = command
            .iter()
            .map(|a| c_string(a.as_bytes()))
            .collect::<std::io::Result<Vec<_>>>()?;
        let inherited = std::env::vars_os().filter(|(k, _)| {
            !extra_env
                .iter()
                .any(|(e, _)| OsStr::new(e) == k.as_os_str())
        });
        let extra = extra_env
            .iter()
            .map(|(k, v)| (OsString::from(k), v.clone()));
        let envp = inherited
            .chain(extra)
            .map(|(k, v)| c_string(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<std::io::Result<Vec<_>>>()?;
        let attr = spawn_attr(own_group).map_err(std::io::Error::from)?;
        Ok(Program { argv, envp, attr })
    }

    /// Starts the program, with `stdin` as its standard input (else ours). An exec failure is
    /// reported here, as by `Command::spawn` (glibc's `posix_spawn` waits for the exec).
    pub fn spawn(&self, stdin: Option<BorrowedFd<'_>>) -> std::io::Result<Pid> {
        let mut actions = PosixSpawnFileActions::init()?;
        if let Some(fd) = stdin {
            // dup2 clears close-on-exec on the copy; the original (close-on-exec) goes at exec.
            actions.add_dup2(fd.as_raw_fd(), 0)?;
        }
        match posix_spawnp(&self.argv[0], &actions, &self.attr, &self.argv, &self.envp) {
            Ok(pid) => Ok(pid),
            // A script without `#!`: glibc's execvp (behind std's fork path) runs it with /bin/sh;
            // its posix_spawnp does not, so we do.
            Err(Errno::ENOEXEC) => {
                let Some(script) = find_in_path(&self.argv[0]) else {
                    return Err(Errno::ENOEXEC.into());
                };
                let mut argv = vec![
                    c_string(b"/bin/sh")?,
                    c_string(script.as_os_str().as_bytes())?,
                ];
                argv.extend(self.argv[1..].iter().cloned());
                Ok(posix_spawnp(
                    &argv[0], &actions, &self.attr, &argv, &self.envp,
                )?)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The child's signal state: nothing blocked (we block everything), SIGPIPE at its default (the
/// Rust runtime ignores it in us); its own process group with `own_group`.
fn spawn_attr(own_group: bool) -> nix::Result<PosixSpawnAttr> {
    let mut attr = PosixSpawnAttr::init()?;
    let mut flags =
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF;
    attr.set_sigmask(&SigSet::empty())?;
    attr.set_sigdefault(&SigSet::from(Signal::SIGPIPE))?;
    if own_group {
        flags |= PosixSpawnFlags::POSIX_SPAWN_SETPGROUP;
        attr.set_pgroup(Pid::from_raw(0))?;
    }
    attr.set_flags(flags)?;
    Ok(attr)
}

/// Where `execvp` finds `name`: itself when it has a `/`, else the first executable regular file
/// of that name in `PATH` (glibc's default when unset).
fn find_in_path(name: &std::ffi::CStr) -> Option<PathBuf> {
    let name = OsStr::from_bytes(name.to_bytes());
    if name.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file() && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("qsup-sys-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sh(script: &str) -> Vec<OsString> {
        ["sh", "-c", script].map(OsString::from).to_vec()
    }

    /// Runs `program` and waits for it (by pid: no other child is touched).
    fn run(program: &Program) -> WaitStatus {
        let pid = program.spawn(None).unwrap();
        nix::sys::wait::waitpid(pid, None).unwrap()
    }

    fn field(status: &str, name: &str) -> u64 {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {status}"));
        u64::from_str_radix(line.trim(), 16).unwrap()
    }

    #[test]
    fn the_child_has_no_signal_blocked_nor_sigpipe_ignored_whatever_our_mask() {
        let dir = scratch("mask");
        let out = dir.join("status");
        // cp itself reads its /proc/self (no shell in between: dash resets its own mask).
        let command = ["cp", "/proc/self/status"].map(OsString::from);
        let program = Program::new(
            &[&command[..], &[out.clone().into_os_string()]].concat(),
            &[],
            false,
        )
        .unwrap();
        // Block everything in this thread, as the init loop does (the child would inherit it).
        let mut old = SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            SigmaskHow::SIG_SETMASK,
            Some(&handled_set()),
            Some(&mut old),
        )
        .unwrap();
        let status = run(&program);
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).unwrap();
        assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(field(&text, "SigBlk:"), 0, "{text}");
        // The Rust runtime ignores SIGPIPE in us; the child gets the default back.
        let sigpipe = 1u64 << (Signal::SIGPIPE as u32 - 1);
        assert_eq!(field(&text, "SigIgn:") & sigpipe, 0, "{text}");
    }

    #[test]
    fn exit_status_environment_and_process_group() {
        let dir = scratch("env");
        let out = dir.join("env");
        std::env::var_os("PATH").expect("PATH is set in tests");
        let program = Program::new(
            &sh(&format!(
                "echo \"$QSUP_EXTRA|$PATH\" > {o}; cut -d' ' -f5 /proc/$$/stat >> {o}; echo $$ >> {o}; exit 7",
                o = out.display()
            )),
            &[("QSUP_EXTRA".into(), "x y".into())],
            true,
        )
        .unwrap();
        let status = run(&program);
        assert!(matches!(status, WaitStatus::Exited(_, 7)), "{status:?}");
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let path = std::env::var("PATH").unwrap();
        assert_eq!(lines[0], format!("x y|{path}"));
        // In its own process group: its pgid is its pid.
        assert_eq!(lines[1], lines[2], "{text}");
    }

    #[test]
    fn failures_to_start_are_errors_with_the_errno() {
        let err = |cmd: &str| {
            Program::new(&[OsString::from(cmd)], &[], false)
                .unwrap()
                .spawn(None)
                .unwrap_err()
                .raw_os_error()
        };
        assert_eq!(err("/no/such/program"), Some(nix::libc::ENOENT));
        assert_eq!(err("no-such-program-on-path"), Some(nix::libc::ENOENT));
        assert_eq!(err("/"), Some(nix::libc::EACCES));
        assert!(Program::new(&[], &[], false).is_err());
        assert!(Program::new(&[OsString::from("a\0b")], &[], false).is_err());
    }

    #[test]
    fn a_script_without_interpreter_line_runs_with_bin_sh() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("noexec");
        let script = dir.join("script");
        std::fs::write(&script, "exit \"$1\"\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let program = Program::new(
            &[script.clone().into_os_string(), OsString::from("5")],
            &[],
            false,
        )
        .unwrap();
        let status = run(&program);
        assert!(matches!(status, WaitStatus::Exited(_, 5)), "{status:?}");
        assert_eq!(
            find_in_path(&c_string(b"sh").unwrap()).map(|p| p.is_file()),
            Some(true)
        );
        assert_eq!(
            find_in_path(&c_string(script.as_os_str().as_bytes()).unwrap()).as_deref(),
            Some(Path::new(&script))
        );
        assert_eq!(
            find_in_path(&c_string(b"no-such-program-on-path").unwrap()),
            None
        );
    }
}
