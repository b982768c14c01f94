//! Which signals are forwarded, and how a signal is named on the command line.

use nix::sys::signal::Signal;

/// Signals forwarded to the worker as they arrive: what the kubelet, `docker stop` and an operator at
/// a terminal send. SIGCHLD is handled by the init loop itself; anything else is logged and dropped.
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Synchronous, fault-type signals: never blocked (blocking them would hide a crash, and the kernel
/// kills the process anyway), plus the job-control ones a shell uses for terminal handoff.
pub const NEVER_BLOCKED: [Signal; 9] = [
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGABRT,
    Signal::SIGTRAP,
    Signal::SIGSYS,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

pub fn is_forwarded(sig: Signal) -> bool {
    FORWARDED.contains(&sig)
}

/// Parses `TERM`, `SIGTERM`, `sigterm` or `15`.
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("no signal numbered {n}"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("unknown signal {text:?} (use a name such as TERM or a number)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_and_numbers() {
        for (text, sig) in [
            ("TERM", Signal::SIGTERM),
            ("SIGTERM", Signal::SIGTERM),
            ("sigterm", Signal::SIGTERM),
            (" term ", Signal::SIGTERM),
            ("15", Signal::SIGTERM),
            ("INT", Signal::SIGINT),
            ("QUIT", Signal::SIGQUIT),
            ("usr1", Signal::SIGUSR1),
            ("10", Signal::SIGUSR1),
            ("9", Signal::SIGKILL),
        ] {
            assert_eq!(parse_signal(text), Ok(sig), "{text}");
        }
        for bad in ["", "SIG", "TERMINATE", "0", "65", "-1", "1.5", "SIGSIGTERM"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_and_never_blocked_do_not_overlap() {
        for s in FORWARDED {
            assert!(!NEVER_BLOCKED.contains(&s));
        }
        assert!(!is_forwarded(Signal::SIGCHLD));
        assert!(!is_forwarded(Signal::SIGKILL));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,20}") {
            let _ = parse_signal(&s);
        }
    }
}
