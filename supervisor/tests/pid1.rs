//! Black-box tests of the built binary's PID-1 duties, in real PID namespaces (`unshare`, as root)
//! and as a subreaper: exit codes, reaping, forwarding, the grace period, no busy polling.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

fn exit_code_in_namespace(cmd: &[&str]) -> i32 {
    let mut args = vec!["--sample-interval", "0", "--"];
    args.extend_from_slice(cmd);
    let mut c = in_namespace(&args);
    code(wait_exit(&mut c, T))
}

#[test]
fn exit_codes() {
    assert_eq!(exit_code_in_namespace(&["true"]), 0);
    assert_eq!(exit_code_in_namespace(&["sh", "-c", "exit 3"]), 3);
    assert_eq!(exit_code_in_namespace(&["/no/such/program"]), 127);
    assert_eq!(exit_code_in_namespace(&["no-such-program-on-path"]), 127);
    let dir = scratch("codes");
    let not_executable = dir.join("script");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    assert_eq!(
        exit_code_in_namespace(&[not_executable.to_str().unwrap()]),
        126
    );
    assert_eq!(exit_code_in_namespace(&["/"]), 126);
    assert_eq!(exit_code_in_namespace(&["sh", "-c", "kill -KILL $$"]), 137);
    assert_eq!(exit_code_in_namespace(&["sh", "-c", "kill -TERM $$"]), 143);
    assert_eq!(exit_code_in_namespace(&["sh", "-c", "kill -SEGV $$"]), 139);
}

#[test]
fn the_worker_starts_with_no_signal_blocked() {
    let dir = scratch("mask");
    let out = dir.join("status");
    // The worker itself copies its own status: a shell in between would hide a blocked mask
    // (dash clears its mask at start).
    let out_arg = out.display().to_string();
    assert_eq!(
        exit_code_in_namespace(&["cp", "/proc/self/status", &out_arg]),
        0
    );
    let text = read(&out);
    assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
    // Standard signals (1-31) are neither blocked nor ignored (glibc's internal 32 and 33 may be).
    let ign = text
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .unwrap();
    assert_eq!(
        u64::from_str_radix(ign, 16).unwrap() & 0x7fff_ffff,
        0,
        "{text}"
    );
}

#[test]
fn orphaned_grandchildren_are_reaped() {
    let dir = scratch("reap");
    let marks = dir.join("marks");
    // Five double-forked orphans that exit at once; then the worker lives on.
    let script = format!(
        "for i in 1 2 3 4 5; do (sh -c 'echo x >> {m}' &); done; exec sleep 30",
        m = marks.display()
    );
    let mut c = in_namespace(&["--sample-interval", "0", "--", "sh", "-c", &script]);
    let sup = supervisor_of(&c);
    wait_for(T, "five orphans to run", || {
        (read(&marks).lines().count() == 5).then_some(())
    });
    // Reparented to the supervisor, they must not stay zombies: only the worker remains.
    let kids = wait_for(T, "every orphan to be reaped", || {
        let kids = children(sup);
        (kids.len() == 1 && kids.iter().all(|p| p.state != 'Z')).then_some(kids)
    });
    assert!(cmdline(kids[0].pid).starts_with("sleep 30"));
    kill(sup, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut c, T)), 143);
}

/// A worker that records each forwarded signal, with a grandchild in its process group that
/// blocks the same signals, so any signal sent to it stays visible as pending in /proc.
fn forwarding(group: bool) {
    let dir = scratch(if group { "fwd-group" } else { "fwd" });
    let log = dir.join("log");
    let ready = dir.join("ready");
    let script = format!(
        r#"perl -MPOSIX -e '$SIG{{INT}}=$SIG{{QUIT}}="DEFAULT"; sigprocmask(SIG_BLOCK, POSIX::SigSet->new(1,2,3,10,12,15,28)); open(F, ">{gready}"); close F; sleep 1000' grandchild &
while [ ! -e {gready} ]; do sleep 0.01; done
for s in TERM INT HUP QUIT USR1 USR2 WINCH; do trap "echo $s >> {log}" $s; done
touch {ready}
while :; do sleep 0.2 & wait $!; done"#,
        log = log.display(),
        ready = ready.display(),
        gready = dir.join("gready").display()
    );
    let mut args = vec!["--sample-interval", "0", "--grace", "1s"];
    if group {
        args.push("-g");
    }
    args.extend(["--", "bash", "-c", &script]);
    let mut c = in_namespace(&args);
    let sup = supervisor_of(&c);
    wait_file(&ready, T);
    let grandchild = find_descendant(sup, "perl");
    let sigs = [
        (Signal::SIGTERM, "TERM"),
        (Signal::SIGINT, "INT"),
        (Signal::SIGHUP, "HUP"),
        (Signal::SIGQUIT, "QUIT"),
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGUSR2, "USR2"),
        (Signal::SIGWINCH, "WINCH"),
    ];
    for (i, (sig, name)) in sigs.iter().enumerate() {
        kill(sup, *sig);
        wait_for(T, &format!("the worker to get {name}"), || {
            (read(&log).lines().count() == i + 1 && read(&log).lines().last() == Some(*name))
                .then_some(())
        });
        // kill() marks the signal pending in every target before it returns, and the worker's
        // trap ran after that: the grandchild's pending set is final here.
        let bit = 1u64 << (*sig as i32 - 1);
        assert_eq!(
            pending(grandchild) & bit != 0,
            group,
            "grandchild pending {:x} after {name} (group forwarding: {group})",
            pending(grandchild)
        );
    }
    // The worker ignores everything; stop it through its process directly.
    let worker = children(sup).first().map(|p| p.pid).unwrap();
    kill(worker, Signal::SIGKILL);
    assert_eq!(code(wait_exit(&mut c, T)), 137);
}

#[test]
fn wrap_mode_sigterm_sends_the_warm_shutdown_signal_once_and_sigkills_before_the_deadline() {
    // No pod to read: the grace is QSCALER_MAX_TASK_SECONDS 1 + 10 s = 11 s after SIGTERM; the worker
    // ignores its warm-shutdown signal (USR1 here), so qsupervisor SIGKILLs it 1 s before that.
    let dir = scratch("wrap-deadline");
    let log = dir.join("log");
    let ready = dir.join("ready");
    let script = format!(
        "for s in TERM USR1; do trap \"echo $s >> {log}\" $s; done; touch {ready}; \
         while :; do sleep 0.2 & wait $!; done",
        log = log.display(),
        ready = ready.display()
    );
    let mut c = in_namespace_with(
        &[
            "--sample-interval",
            "0",
            "--drain-signal",
            "USR1",
            "--",
            "bash",
            "-c",
            &script,
        ],
        &[("QSCALER_MAX_TASK_SECONDS", "1")],
    );
    let sup = supervisor_of(&c);
    wait_file(&ready, T);
    let sent = std::time::Instant::now();
    kill(sup, Signal::SIGTERM);
    wait_for(T, "the warm-shutdown signal", || {
        (!read(&log).is_empty()).then_some(())
    });
    // A second SIGTERM is not passed on (for Celery and the like it would mean a cold shutdown).
    kill(sup, Signal::SIGTERM);
    let status = wait_exit(&mut c, Duration::from_secs(15));
    let took = sent.elapsed().as_secs_f64();
    assert_eq!(read(&log).lines().collect::<Vec<_>>(), vec!["USR1"]);
    assert_eq!(code(status), 137);
    assert!(
        (9.5..11.0).contains(&took),
        "ended {took:.2} s after SIGTERM (want ~10 s: 1 s before the 11 s grace ends)"
    );
}

#[test]
fn signals_go_to_the_worker_only_by_default() {
    forwarding(false);
}

#[test]
fn signal_group_option_reaches_the_process_group() {
    forwarding(true);
}

#[test]
fn subreaper_when_not_pid_1() {
    let dir = scratch("subreaper");
    let ready = dir.join("ready");
    let script = format!(
        "(exec sleep 31 &); touch {}; exec sleep 30",
        ready.display()
    );
    let mut c = plain(&[
        "--sample-interval",
        "0",
        "--grace",
        "1s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let sup = c.id() as i32;
    wait_file(&ready, T);
    // The orphan was reparented to us, not to the host's init.
    let orphan = wait_for(T, "the orphan under the supervisor", || {
        children(sup)
            .into_iter()
            .find(|p| cmdline(p.pid).starts_with("sleep 31"))
            .map(|p| p.pid)
    });
    kill(sup, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut c, T)), 143);
    // The worker's end took the remaining descendant with it.
    assert!(
        stat(orphan).is_none_or(|p| p.ppid != sup),
        "orphan {orphan} survived"
    );
}

#[test]
fn descendants_get_the_grace_period_then_sigkill() {
    let dir = scratch("grace");
    let ready = dir.join("ready");
    // A descendant that ignores SIGTERM outlives the worker.
    let script = format!(
        "(trap '' TERM; touch {r}; exec sleep 100) & while [ ! -e {r} ]; do sleep 0.01; done; exit 4",
        r = ready.display()
    );
    let started = Instant::now();
    let mut c = plain(&[
        "--sample-interval",
        "0",
        "--grace",
        "1s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let status = wait_exit(&mut c, T);
    let took = started.elapsed();
    assert_eq!(code(status), 4);
    assert!(
        took >= Duration::from_secs(1),
        "exited after {took:?}, before the grace period"
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
    // A descendant that obeys SIGTERM ends the wait early.
    let started = Instant::now();
    let mut c = plain(&[
        "--sample-interval",
        "0",
        "--grace",
        "5s",
        "--",
        "sh",
        "-c",
        "sleep 100 & exit 0",
    ]);
    assert_eq!(code(wait_exit(&mut c, T)), 0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn descendants_get_the_grace_period_as_pid_1() {
    let ready = scratch("grace-ns").join("ready");
    let script = format!(
        "(trap '' TERM; touch {r}; exec sleep 100) & while [ ! -e {r} ]; do sleep 0.01; done; exit 4",
        r = ready.display()
    );
    let started = Instant::now();
    let mut c = in_namespace(&[
        "--sample-interval",
        "0",
        "--grace",
        "1s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(code(wait_exit(&mut c, T)), 4);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "took {took:?}"
    );
}

fn cpu_ticks(pid: i32) -> u64 {
    stat(pid).map(|p| p.cpu_ticks()).unwrap()
}

#[test]
fn no_busy_polling() {
    for sample in ["0", "10s"] {
        let mut c = plain(&["--sample-interval", sample, "--", "sleep", "4"]);
        let sup = c.id() as i32;
        // Let start-up work (runtime, first sample) finish.
        std::thread::sleep(Duration::from_millis(700));
        let before = cpu_ticks(sup);
        std::thread::sleep(Duration::from_secs(2));
        let after = cpu_ticks(sup);
        assert!(
            after - before <= 1,
            "sampler {sample}: {} ticks of CPU in 2 s while idle",
            after - before
        );
        assert_eq!(code(wait_exit(&mut c, T)), 0);
    }
}
