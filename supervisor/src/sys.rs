//! The operating-system calls of the init loop, each a thin wrapper that turns errno into
//! [`crate::Error`]. The crate's only `unsafe` is here: [`unblock_in_child`], because
//! `std::process::Command` keeps the parent's signal mask in the child (std resets SIGPIPE's
//! disposition, not the mask), and a worker that starts with every signal blocked would never see
//! the SIGTERM we forward.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
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

/// Empties the signal mask in the child between `fork` and `exec`.
pub fn unblock_in_child(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec; it only calls pthread_sigmask,
    // which is async-signal-safe, allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
}
