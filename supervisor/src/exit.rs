//! How a child's end maps to an exit code, and what the supervisor says about it.

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It called exit with this code.
    Exited(i32),
    /// A signal with this number killed it.
    Signaled(i32),
}

impl Outcome {
    /// The shell convention: the code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            Outcome::Exited(c) => c,
            Outcome::Signaled(s) => 128 + s,
        }
    }

    pub fn success(self) -> bool {
        self == Outcome::Exited(0)
    }
}

/// The pid and outcome of a wait status that means "this process is gone"; `None` for stops,
/// continues and "nothing to report".
pub fn ended(ws: WaitStatus) -> Option<(Pid, Outcome)> {
    match ws {
        WaitStatus::Exited(pid, code) => Some((pid, Outcome::Exited(code))),
        WaitStatus::Signaled(pid, sig, _) => Some((pid, Outcome::Signaled(sig as i32))),
        _ => None,
    }
}

/// Exit code of a command that could not be started, as shells do: 127 when it does not exist,
/// 126 when it exists but cannot be executed.
pub fn spawn_failure_code(err: &std::io::Error) -> i32 {
    match err.raw_os_error() {
        Some(nix::libc::ENOENT) | Some(nix::libc::ENOTDIR) => 127,
        _ if err.kind() == std::io::ErrorKind::NotFound => 127,
        _ => 126,
    }
}

/// What happened to a drain, as far as the worker's end tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No drain was asked: the worker's own code (or 128+signal) is passed through.
    PassThrough,
    /// The worker was asked to drain and exited by itself: the pod succeeded, whatever its code.
    Drained { worker_code: i32 },
    /// The worker was asked to drain and the drain signal killed it: it does not handle the signal,
    /// so whatever it was doing was cut. Reported, never hidden.
    CutByDrainSignal { signal: i32 },
    /// The worker did not finish within `--drain-timeout` and was killed.
    DrainTimedOut,
}

/// The supervisor's exit code when the worker ended with `outcome`, given the drain signal sent
/// (if any) and whether the drain timeout already fired SIGKILL.
pub fn worker_exit(outcome: Outcome, drain_signal: Option<i32>, timed_out: bool) -> (i32, Verdict) {
    match (drain_signal, outcome) {
        (None, o) => (o.code(), Verdict::PassThrough),
        (Some(_), Outcome::Exited(c)) => (0, Verdict::Drained { worker_code: c }),
        (Some(_), o @ Outcome::Signaled(s)) if timed_out && s == nix::libc::SIGKILL => {
            (o.code(), Verdict::DrainTimedOut)
        }
        (Some(d), o @ Outcome::Signaled(s)) if s == d => {
            (o.code(), Verdict::CutByDrainSignal { signal: s })
        }
        (Some(_), o) => (o.code(), Verdict::PassThrough),
    }
}

/// The exit code after `--remap-exit` (tini's `-e`): 0 when `code` is one of `zero`, else `code`.
/// Applied only to the worker's (or a cut task's) code, never to qsupervisor's own failures.
pub fn remapped(code: i32, zero: &[u8]) -> i32 {
    match u8::try_from(code) {
        Ok(c) if zero.contains(&c) => 0,
        _ => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn codes_follow_the_shell_convention() {
        assert_eq!(Outcome::Exited(0).code(), 0);
        assert_eq!(Outcome::Exited(3).code(), 3);
        assert_eq!(Outcome::Signaled(15).code(), 143);
        assert_eq!(Outcome::Signaled(9).code(), 137);
        assert!(Outcome::Exited(0).success());
        assert!(!Outcome::Exited(1).success());
        assert!(!Outcome::Signaled(15).success());
    }

    #[test]
    fn wait_statuses() {
        let p = Pid::from_raw(7);
        assert_eq!(
            ended(WaitStatus::Exited(p, 3)),
            Some((p, Outcome::Exited(3)))
        );
        assert_eq!(
            ended(WaitStatus::Signaled(p, Signal::SIGKILL, true)),
            Some((p, Outcome::Signaled(9)))
        );
        assert_eq!(ended(WaitStatus::StillAlive), None);
        assert_eq!(ended(WaitStatus::Stopped(p, Signal::SIGSTOP)), None);
        assert_eq!(ended(WaitStatus::Continued(p)), None);
    }

    #[test]
    fn spawn_failures() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert_eq!(spawn_failure_code(&e(nix::libc::ENOENT)), 127);
        assert_eq!(spawn_failure_code(&e(nix::libc::ENOTDIR)), 127);
        assert_eq!(spawn_failure_code(&e(nix::libc::EACCES)), 126);
        assert_eq!(spawn_failure_code(&e(nix::libc::ENOEXEC)), 126);
        assert_eq!(spawn_failure_code(&e(nix::libc::EPERM)), 126);
    }

    #[test]
    fn remapping_zeroes_only_the_listed_codes() {
        assert_eq!(remapped(143, &[143]), 0);
        assert_eq!(remapped(143, &[1, 143]), 0);
        assert_eq!(remapped(143, &[]), 143);
        assert_eq!(remapped(137, &[143]), 137);
        assert_eq!(remapped(0, &[143]), 0);
        assert_eq!(remapped(0, &[0]), 0);
        // Codes outside 0..=255 never match a listed code (no truncation: 399 is not 143).
        assert_eq!(remapped(399, &[143]), 399);
        assert_eq!(remapped(-113, &[143]), -113);
    }

    #[test]
    fn drain_verdicts() {
        let term = Some(15);
        let table = [
            (Outcome::Exited(0), None, false, (0, Verdict::PassThrough)),
            (Outcome::Exited(3), None, false, (3, Verdict::PassThrough)),
            (
                Outcome::Signaled(9),
                None,
                false,
                (137, Verdict::PassThrough),
            ),
            (
                Outcome::Exited(0),
                term,
                false,
                (0, Verdict::Drained { worker_code: 0 }),
            ),
            (
                Outcome::Exited(1),
                term,
                false,
                (0, Verdict::Drained { worker_code: 1 }),
            ),
            (
                Outcome::Signaled(15),
                term,
                false,
                (143, Verdict::CutByDrainSignal { signal: 15 }),
            ),
            (
                Outcome::Signaled(9),
                term,
                true,
                (137, Verdict::DrainTimedOut),
            ),
            (
                Outcome::Signaled(9),
                term,
                false,
                (137, Verdict::PassThrough),
            ),
            (
                Outcome::Signaled(11),
                term,
                false,
                (139, Verdict::PassThrough),
            ),
            (
                Outcome::Signaled(2),
                Some(2),
                false,
                (130, Verdict::CutByDrainSignal { signal: 2 }),
            ),
        ];
        for (o, d, t, want) in table {
            assert_eq!(worker_exit(o, d, t), want, "{o:?} {d:?} {t}");
        }
    }
}
