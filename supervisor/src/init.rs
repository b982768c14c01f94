//! The init loop: PID 1's whole job, on the main thread.
//!
//! It sleeps in one `poll` on two descriptors: a signalfd (every catchable signal is blocked, so
//! signals arrive only here, never as asynchronous handlers) and the eventfd of the [`bridge`]
//! (requests from the agent). No timer runs while the worker lives; the only timeout is the grace
//! period after the worker has exited. Each wake-up:
//!
//! * SIGCHLD: reap with `waitpid(-1, WNOHANG)` until nothing more has ended, orphans included.
//!   The worker's end starts the ending phase; a task's end is told to the agent.
//! * SIGTERM (the kubelet or `docker stop` ending the container) is a drain, told to the agent: in
//!   task mode the running task is not signalled (the agent lets it finish, or signals it shortly
//!   before the grace period ends); in wrap mode the worker gets its warm-shutdown signal
//!   (`--drain-signal`) once, unless a drain sent it already.
//! * INT, HUP, QUIT, USR1, USR2, WINCH: forwarded at once to the worker (or the current task)
//!   process, or its process group with `--signal-group`; INT and QUIT are also told to the agent.
//! * requests: the drain signal, SIGKILL after the drain timeout, spawning a task, signals to the
//!   task or SIGKILL to everything shortly before the kubelet's SIGKILL, the kubelet's deadline,
//!   exiting.
//!
//! Ending phase: SIGTERM to every remaining descendant (as PID 1 `kill(-1)`, which reaches exactly
//! the processes of our PID namespace; as a subreaper, the descendants found in procfs), SIGKILL after
//! `--grace`, then exit with the worker's code once no child is left. When the pod is ending, every
//! wait of this phase ends before the kubelet's SIGKILL is due.
//!
//! [`bridge`]: crate::bridge

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use crate::bridge::{InitSide, Notice, Request};
use crate::exit::{self, Outcome, Verdict};
use crate::signals::is_forwarded;
use crate::{proctree, sys, Error, Result};

/// How long SIGKILLed stragglers get to disappear before we exit anyway.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How long the agent gets to write its last usage report at exit.
const AGENT_EXIT_WAIT: Duration = Duration::from_secs(5);
/// When the pod is ending: the SIGTERM-to-descendants wait of the ending phase ends this long before
/// the kubelet's SIGKILL is due (leaving time for our SIGKILL and the last usage report).
const ENDING_RESERVE: Duration = Duration::from_millis(500);

/// How the init loop behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Forward to the process group rather than the process.
    pub signal_group: bool,
    /// Time for descendants after SIGTERM once the worker is gone.
    pub grace: Duration,
    /// The command (the worker in wrap mode, the per-task command in task mode).
    pub command: Vec<OsString>,
    /// Task mode: no long-lived worker; tasks are spawned on request.
    pub task_mode: bool,
    /// Wrap mode: the worker's warm-shutdown signal, sent on SIGTERM as on a drain.
    pub drain_signal: Signal,
    /// Extra environment for the worker.
    pub env: Vec<(String, OsString)>,
    /// The worker's exit codes reported as 0 (`--remap-exit`).
    pub remap_exit: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Running,
    Ending {
        code: i32,
        deadline: Instant,
        killed: bool,
    },
}

/// The init loop's state.
pub struct Init {
    cfg: Config,
    sigfd: SignalFd,
    bridge: InitSide,
    agent_alive: bool,
    worker: Option<Pid>,
    task: Option<Pid>,
    drain_signal: Option<i32>,
    drain_timed_out: bool,
    /// Wrap mode: the warm-shutdown signal went out (by a drain or a SIGTERM); never twice.
    warm_sent: bool,
    /// The pod is ending: the kubelet's SIGKILL is due then.
    hard_deadline: Option<Instant>,
    /// Task mode: the command, prepared at the first task and reused for every other.
    program: Option<sys::Program>,
    /// Wrap mode: we SIGKILLed the worker shortly before the kubelet would have.
    deadline_killed: bool,
    phase: Phase,
}

/// Payloads up to this size are written into the task's stdin pipe before it starts: an empty pipe
/// holds at least one page (even when the kernel shrinks pipes of a user over its pipe quota), so
/// the write never blocks and no writer thread is needed.
const DIRECT_STDIN_MAX: usize = 4096;

/// Starts `program`, with `stdin` (the task's payload) on a pipe as its standard input, or with ours.
pub fn spawn(program: &sys::Program, stdin: Option<Vec<u8>>) -> std::io::Result<Pid> {
    let Some(payload) = stdin else {
        return program.spawn(None);
    };
    let (reader, mut writer) = std::io::pipe()?;
    if payload.len() <= DIRECT_STDIN_MAX {
        writer.write_all(&payload)?;
        drop(writer);
        return program.spawn(Some(reader.as_fd()));
    }
    let pid = program.spawn(Some(reader.as_fd()))?;
    drop(reader);
    // A thread, so a large payload never blocks the init loop; it inherits the blocked mask.
    let written = std::thread::Builder::new()
        .name("task-stdin".into())
        .spawn(move || {
            if let Err(e) = writer.write_all(&payload) {
                debug!("task stopped reading its stdin: {e}");
            }
        });
    if let Err(e) = written {
        error!("could not start the stdin writer, the task gets an empty stdin: {e}");
    }
    Ok(pid)
}

/// The command of `cfg`, ready to start.
fn program(cfg: &Config) -> std::io::Result<sys::Program> {
    sys::Program::new(&cfg.command, &cfg.env, cfg.signal_group)
}

impl Init {
    /// A loop for an already started worker (`worker`: wrap mode) or none (task mode).
    pub fn new(
        cfg: Config,
        sigfd: SignalFd,
        bridge: InitSide,
        agent_alive: bool,
        worker: Option<Pid>,
    ) -> Self {
        Init {
            cfg,
            sigfd,
            bridge,
            agent_alive,
            worker,
            task: None,
            drain_signal: None,
            drain_timed_out: false,
            warm_sent: false,
            hard_deadline: None,
            program: None,
            deadline_killed: false,
            phase: Phase::Running,
        }
    }

    /// Runs until the supervisor should exit; returns the exit code.
    pub fn run(mut self) -> i32 {
        loop {
            let timeout = match self.phase {
                Phase::Running => None,
                Phase::Ending { deadline, .. } => {
                    Some(deadline.saturating_duration_since(Instant::now()))
                }
            };
            let (sig_ready, wake_ready) = match sys::wait_readable(
                sys::fd_of(&self.sigfd),
                sys::fd_of(&*self.bridge.waker),
                timeout,
            ) {
                Ok(r) => r,
                Err(e) => {
                    // Should not happen; never spin at full speed if it does.
                    error!("{e}");
                    std::thread::sleep(Duration::from_millis(100));
                    (true, true)
                }
            };
            if sig_ready {
                self.handle_signals();
            }
            if wake_ready {
                sys::clear_waker(&self.bridge.waker);
                self.handle_requests();
            }
            if let Some(code) = self.step_ending() {
                return self.finish(code);
            }
        }
    }

    fn target(&self, pid: Pid) -> Pid {
        if self.cfg.signal_group {
            Pid::from_raw(-pid.as_raw())
        } else {
            pid
        }
    }

    fn send(&self, pid: Pid, sig: Signal) {
        if let Err(e) = sys::send(self.target(pid), sig) {
            error!("could not send {sig} to {pid}: {e}");
        }
    }

    fn handle_signals(&mut self) {
        loop {
            match sys::next_signal(&self.sigfd) {
                Ok(Some(Signal::SIGCHLD)) => {
                    self.reap();
                }
                Ok(Some(sig)) if is_forwarded(sig) => self.forward(sig),
                Ok(Some(sig)) => debug!("ignoring {sig}"),
                Ok(None) => break,
                Err(e) => {
                    error!("{e}");
                    break;
                }
            }
        }
        // SIGCHLD may have been merged with one already read; reaping is cheap and idempotent.
        self.reap();
    }

    fn forward(&mut self, sig: Signal) {
        if let Phase::Ending { .. } = self.phase {
            debug!("{sig} while ending: remaining processes were already told to stop");
            return;
        }
        if sig == Signal::SIGTERM {
            self.terminate();
        } else {
            match self.worker.or(self.task) {
                Some(pid) => {
                    info!("forwarding {sig} to {}", self.target(pid));
                    self.send(pid, sig);
                }
                None => debug!("{sig}: no process to forward it to"),
            }
        }
        // Only the stop signals matter to the agent; not waking it for the others keeps
        // forwarding latency low.
        if crate::task::is_shutdown_signal(sig) {
            self.bridge.notify(Notice::Signal(sig));
        }
    }

    /// SIGTERM from outside: the kubelet (pod deletion, eviction) or `docker stop` ends the
    /// container, with a grace period. It is a drain.
    fn terminate(&mut self) {
        if self.cfg.task_mode {
            match self.task {
                Some(pid) => info!(
                    "SIGTERM: draining: no new task is taken; the task {pid} is not signalled, it \
                     may finish until shortly before the grace period ends"
                ),
                None => info!("SIGTERM: draining: no task runs"),
            }
            return;
        }
        let Some(pid) = self.worker else {
            debug!("SIGTERM: no worker to tell");
            return;
        };
        let sig = self.cfg.drain_signal;
        if std::mem::replace(&mut self.warm_sent, true) {
            info!("SIGTERM: the worker already got its warm-shutdown signal {sig}; not sending it again");
            return;
        }
        info!(
            "forwarding {sig} to {} (SIGTERM: the container is being stopped; {sig} is the worker's \
             warm-shutdown signal, sent once)",
            self.target(pid)
        );
        self.send(pid, sig);
    }

    /// `at`, or earlier: `reserve` before the kubelet's SIGKILL when the pod is ending (not in the
    /// past).
    fn bounded(&self, at: Instant, reserve: Duration) -> Instant {
        match self.hard_deadline {
            Some(d) => at.min(d.checked_sub(reserve).unwrap_or(d).max(Instant::now())),
            None => at,
        }
    }

    /// Reaps every ended child. Returns whether children remain.
    fn reap(&mut self) -> bool {
        loop {
            match sys::reap_one() {
                Ok(sys::Reaped::Status(ws)) => {
                    if let Some((pid, outcome)) = exit::ended(ws) {
                        self.ended(pid, outcome);
                    }
                }
                Ok(sys::Reaped::NoneEnded) => return true,
                Ok(sys::Reaped::NoChildren) => return false,
                Err(e) => {
                    error!("{e}");
                    return true;
                }
            }
        }
    }

    fn ended(&mut self, pid: Pid, outcome: Outcome) {
        if Some(pid) == self.worker {
            self.worker = None;
            let (code, verdict) =
                exit::worker_exit(outcome, self.drain_signal, self.drain_timed_out);
            match verdict {
                _ if self.deadline_killed && outcome == Outcome::Signaled(nix::libc::SIGKILL) => {
                    error!(
                        "worker {pid} had not finished within the pod's grace period: killed by \
                         qsupervisor shortly before the kubelet's SIGKILL; exit code {}",
                        outcome.code()
                    );
                    self.begin_ending(self.remapped(outcome.code()));
                    return;
                }
                Verdict::PassThrough => info!("worker {pid} ended: {outcome:?}; exit code {code}"),
                Verdict::Drained { worker_code } => info!(
                    "worker {pid} finished after the drain request (its own exit code {worker_code}); exit code 0"
                ),
                Verdict::CutByDrainSignal { signal } => error!(
                    "worker {pid} was killed by the drain signal {signal}: it does not handle it, so \
                     the task it was running was cut; use --drain-signal with the worker's warm-shutdown \
                     signal. Exit code {code}"
                ),
                Verdict::DrainTimedOut => error!(
                    "worker {pid} did not finish within --drain-timeout and was killed; exit code {code}"
                ),
            }
            self.begin_ending(self.remapped(code));
        } else if Some(pid) == self.task {
            self.task = None;
            debug!("task {pid} ended: {outcome:?}");
            self.bridge.notify(Notice::TaskEnded(outcome));
        } else {
            debug!("reaped {pid}: {outcome:?}");
        }
    }

    /// The worker's code after `--remap-exit`.
    fn remapped(&self, code: i32) -> i32 {
        let out = exit::remapped(code, &self.cfg.remap_exit);
        if out != code {
            info!("exit code {code} remapped to {out} (--remap-exit)");
        }
        out
    }

    fn handle_requests(&mut self) {
        while let Ok(r) = self.bridge.requests.try_recv() {
            self.request(r);
        }
    }

    fn request(&mut self, r: Request) {
        let running = matches!(self.phase, Phase::Running);
        match r {
            Request::DrainSignal(sig) => match self.worker {
                Some(_) if running && self.warm_sent => {
                    info!("drain requested: the worker already got its warm-shutdown signal");
                    self.drain_signal = Some(sig as i32);
                }
                Some(pid) if running => {
                    self.warm_sent = true;
                    info!(
                        "drain requested: sending {sig} to the worker {}",
                        self.target(pid)
                    );
                    self.drain_signal = Some(sig as i32);
                    self.send(pid, sig);
                }
                _ => debug!("drain requested but no worker runs"),
            },
            Request::KillWorker => {
                if let Some(pid) = self.worker {
                    warn!("the worker did not finish within --drain-timeout: SIGKILL");
                    self.drain_timed_out = true;
                    self.send(pid, Signal::SIGKILL);
                }
            }
            Request::SpawnTask(payload) => {
                let result = if !running || self.task.is_some() {
                    Err(126)
                } else {
                    match self.spawn_task(payload) {
                        Ok(pid) => {
                            self.task = Some(pid);
                            Ok(pid.as_raw())
                        }
                        Err(e) => {
                            let code = exit::spawn_failure_code(&e);
                            error!("could not start the task command: {e} (exit code {code})");
                            Err(code)
                        }
                    }
                };
                self.bridge.notify(Notice::TaskStarted(result));
            }
            Request::SignalTask(sig) => match self.task {
                Some(pid) => {
                    warn!(
                        "the pod's grace period ends soon: sending {sig} to the task {}",
                        self.target(pid)
                    );
                    self.send(pid, sig);
                }
                None => debug!("{sig} for the task, but no task runs"),
            },
            Request::KillAtDeadline => {
                if let Some(pid) = self.worker.filter(|_| running) {
                    warn!(
                        "the pod's grace period ends soon and the worker {pid} is still running: \
                         SIGKILL to it and every other process"
                    );
                    self.deadline_killed = true;
                    self.send(pid, Signal::SIGKILL);
                    self.signal_descendants(Signal::SIGKILL);
                }
            }
            Request::Deadline(at) => {
                self.hard_deadline = Some(at);
                if let Phase::Ending {
                    code,
                    deadline,
                    killed,
                } = self.phase
                {
                    let reserve = if killed {
                        Duration::ZERO
                    } else {
                        ENDING_RESERVE
                    };
                    self.phase = Phase::Ending {
                        code,
                        deadline: self.bounded(deadline, reserve),
                        killed,
                    };
                }
            }
            Request::Exit(code) => {
                if running {
                    self.begin_ending(code);
                }
            }
            Request::AgentGone => {
                self.agent_alive = false;
                if self.cfg.task_mode && running {
                    error!("the task agent stopped; exiting");
                    self.begin_ending(70);
                }
            }
        }
    }

    fn spawn_task(&mut self, payload: Vec<u8>) -> std::io::Result<Pid> {
        let program = match self.program.take() {
            Some(p) => p,
            None => program(&self.cfg)?,
        };
        let pid = spawn(&program, Some(payload));
        self.program = Some(program);
        pid
    }

    /// Asks every remaining descendant to stop. Returns how many were asked (as PID 1: 1 if any).
    fn signal_descendants(&self, sig: Signal) -> usize {
        let me = sys::own_pid();
        if me.as_raw() == 1 {
            // kill(-1) from a namespace's init reaches every process of the namespace but itself.
            return match nix::sys::signal::kill(Pid::from_raw(-1), sig) {
                Ok(()) => 1,
                Err(_) => 0,
            };
        }
        let rest = proctree::descendants_of(me.as_raw());
        for p in &rest {
            let _ = sys::send(Pid::from_raw(p.pid), sig);
        }
        rest.len()
    }

    fn begin_ending(&mut self, code: i32) {
        let deadline = self.bounded(Instant::now() + self.cfg.grace, ENDING_RESERVE);
        if self.reap() {
            let n = self.signal_descendants(Signal::SIGTERM);
            info!(
                "waiting up to {:?} for {n} remaining process(es) after SIGTERM",
                deadline.saturating_duration_since(Instant::now())
            );
        }
        self.phase = Phase::Ending {
            code,
            deadline,
            killed: false,
        };
    }

    /// In the ending phase: the exit code once nothing is left (or waiting is over).
    fn step_ending(&mut self) -> Option<i32> {
        let Phase::Ending {
            code,
            deadline,
            killed,
        } = self.phase
        else {
            return None;
        };
        if !self.reap() {
            return Some(code);
        }
        if Instant::now() < deadline {
            return None;
        }
        if killed {
            error!("processes remain after SIGKILL (stuck in the kernel?); exiting anyway");
            return Some(code);
        }
        warn!("processes remain after the grace period: SIGKILL");
        self.signal_descendants(Signal::SIGKILL);
        self.phase = Phase::Ending {
            code,
            deadline: self.bounded(Instant::now() + KILL_WAIT, Duration::ZERO),
            killed: true,
        };
        None
    }

    fn finish(self, code: i32) -> i32 {
        if self.agent_alive {
            self.bridge.notify(Notice::Exiting(code));
            let wait = self
                .bounded(Instant::now() + AGENT_EXIT_WAIT, Duration::from_millis(50))
                .saturating_duration_since(Instant::now());
            if !self.bridge.wait_done(wait) {
                warn!("the agent did not finish its exit work in time");
            }
        }
        code
    }
}

/// Starts the worker for wrap mode, mapping a failure to the shell's exit code.
pub fn start_worker(cfg: &Config) -> Result<Pid, i32> {
    program(cfg).and_then(|p| spawn(&p, None)).map_err(|e| {
        let code = exit::spawn_failure_code(&e);
        let err = Error::Io {
            doing: "starting the worker",
            source: e,
        };
        error!("{err}: {:?} (exit code {code})", cfg.command.first());
        code
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};

    fn cat_into(path: &std::path::Path) -> sys::Program {
        let script = format!("cat > {}", path.display());
        let command = ["sh", "-c", &script].map(OsString::from).to_vec();
        sys::Program::new(&command, &[], false).unwrap()
    }

    #[test]
    fn the_payload_arrives_whole_on_stdin_written_directly_or_by_a_thread() {
        let dir = std::env::temp_dir().join(format!("qsup-init-stdin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for len in [0, 1, DIRECT_STDIN_MAX, DIRECT_STDIN_MAX + 1, 300_000] {
            let out = dir.join(format!("out-{len}"));
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let pid = spawn(&cat_into(&out), Some(payload.clone())).unwrap();
            assert!(matches!(waitpid(pid, None), Ok(WaitStatus::Exited(_, 0))));
            assert!(std::fs::read(&out).unwrap() == payload, "{len} bytes");
        }
    }

    #[test]
    fn a_task_that_ignores_its_stdin_still_ends() {
        let program = sys::Program::new(&[OsString::from("true")], &[], false).unwrap();
        for len in [10, 1_000_000] {
            let pid = spawn(&program, Some(vec![b'x'; len])).unwrap();
            assert!(matches!(waitpid(pid, None), Ok(WaitStatus::Exited(_, 0))));
        }
    }
}
