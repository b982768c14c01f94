//! qsupervisor: parse, block signals, become a subreaper, start the worker and the agent, loop.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use qscaler_crds::names::env;
use qsupervisor::bridge::bridge;
use qsupervisor::broker::Broker;
use qsupervisor::cli::{LogFormat, Options, ENV_ACTIVITY_SOCKET};
use qsupervisor::init::{self, Init};
use qsupervisor::{activity, agent, sys};
use tracing::{error, info, warn};

fn main() -> ExitCode {
    // Before anything else, for --parent-death-signal: the parent we must outlive no longer.
    let parent = sys::parent_pid();
    let options = Options::parse();
    logging(options.log_format);
    // A panic must never go unnoticed; the init loop itself never unwraps outside input.
    std::panic::set_hook(Box::new(|p| error!("panic: {p}")));
    ExitCode::from((run(options, parent) & 0xff) as u8)
}

/// The log filter without RUST_LOG. kube's HTTP layer logs every failed request at ERROR; each
/// failure is logged here with what was being done (and throttled while the API is away), so its
/// lines would only repeat ours, unthrottled.
const DEFAULT_LOG_FILTER: &str = "info,kube_client::client::builder=off";

fn logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Never coloured: its stderr is the container's log (`kubectl logs`), a terminal only
        // under `docker run -t`, where the runtime stores the escape codes all the same.
        .with_ansi(false);
    match format {
        // The operator's shape (the target included), so one log pipeline parses both.
        LogFormat::Json => fmt.json().init(),
        LogFormat::Text => fmt.with_target(false).init(),
    }
}

/// The checklist; returns the exit code.
fn run(options: Options, parent: nix::unistd::Pid) -> i32 {
    if let Err(e) = options.validate() {
        error!("{e}");
        return 2;
    }

    // 1. Signals: blocked before any thread exists, read from a signalfd from now on.
    let set = sys::handled_set();
    if let Err(e) = sys::block(&set) {
        error!("{e}");
        return 1;
    }
    let sigfd = match sys::signal_fd(&set) {
        Ok(fd) => fd,
        Err(e) => {
            error!("{e}");
            return 1;
        }
    };

    // 2. The parent's death as a signal (blocked by now: it arrives on the signalfd).
    if let Some(sig) = options.parent_death_signal {
        if let Err(e) = sys::set_parent_death_signal(sig, parent) {
            error!("{e}");
            return 1;
        }
    }

    // 3. Subreaper, unless we are PID 1 already.
    if sys::own_pid().as_raw() != 1 {
        match sys::become_subreaper() {
            Ok(()) => info!("not PID 1: registered as child subreaper"),
            Err(e) => warn!("{e}: orphaned grandchildren will not be reaped by us"),
        }
    }

    // 4. What the agent needs, prepared before the worker starts (the socket must exist first).
    let activity_socket = match options.activity_socket.as_deref().filter(|_| !options.task) {
        Some(path) => match activity::bind(path) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(
                    "activity socket {}: {e}; the worker's reports are ignored",
                    path.display()
                );
                None
            }
        },
        None => None,
    };
    let broker = if options.task {
        match Broker::with_sentinel_password(
            &options,
            std::env::var(env::REDIS_PASSWORD).ok(),
            std::env::var(env::REDIS_SENTINEL_PASSWORD).ok(),
        ) {
            Ok(b) => Some(b),
            Err(e) => {
                error!("{e}");
                return 2;
            }
        }
    } else {
        None
    };
    let waker = match sys::waker() {
        Ok(w) => w,
        Err(e) => {
            error!("{e}");
            return 1;
        }
    };
    let (init_side, agent_side) = bridge(waker);

    // 5. The worker (wrap mode).
    let mut extra_env = Vec::new();
    if let (Some(path), Some(_)) = (&options.activity_socket, &activity_socket) {
        extra_env.push((
            ENV_ACTIVITY_SOCKET.to_owned(),
            OsString::from(path.as_os_str()),
        ));
    }
    let cfg = init::Config {
        signal_group: options.signal_group,
        grace: options.grace,
        command: options.command.clone(),
        task_mode: options.task,
        drain_signal: options.drain_signal,
        env: extra_env,
        remap_exit: options.remap_exit.clone(),
    };
    let worker = if options.task {
        None
    } else {
        match init::start_worker(&cfg) {
            Ok(pid) => {
                info!("worker {pid} started: {:?}", options.command);
                Some(pid)
            }
            Err(code) => return code,
        }
    };

    // 6. The agent, on its own thread (inheriting the blocked mask). Always: besides the pod, task
    //    mode and usage, it keeps the kubelet's clock after SIGTERM (see `ending`).
    let pod_name = options
        .pod_name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "local".into());
    let consumer = qscaler_crds::names::keys::consumer(options.pod_namespace.as_deref(), &pod_name);
    let agent_alive = match agent::start(
        agent::Inputs {
            options,
            broker,
            activity_socket,
            consumer,
        },
        agent_side,
    ) {
        Ok(_) => true,
        Err(e) => {
            error!("could not start the agent thread: {e}; running as a plain init");
            false
        }
    };
    if cfg.task_mode && !agent_alive {
        return 1;
    }

    // 7. The loop.
    Init::new(cfg, sigfd, init_side, agent_alive, worker).run()
}
