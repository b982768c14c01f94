//! The command line: every option is also an environment variable, so a pod spec can set them
//! either way.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use nix::sys::signal::Signal;
use qscaler_crds::names::env;
use qscaler_crds::qworker::QueueFormat;

use crate::signals::parse_signal;

/// Environment variable naming the activity socket (see `--activity-socket`).
pub const ENV_ACTIVITY_SOCKET: &str = "QSCALER_ACTIVITY_SOCKET";
/// Environment variable with a full Redis URL for task mode (overrides the host/port/... variables).
pub const ENV_REDIS_URL: &str = "QSCALER_REDIS_URL";

const ENV_HELP: &str = "\
ENVIRONMENT (set by the QScaler operator in worker pods):
  POD_NAME, POD_NAMESPACE    the pod's own name and namespace (downward API). With both set,
                             qsupervisor reads the pod through the Kubernetes API (KUBECONFIG or the
                             in-cluster service account), retrying until it can (200 ms doubling to
                             10 s), watches it for the drain annotation quickube.com/drain and writes
                             usage to quickube.com/usage-<container> and, when known,
                             quickube.com/activity. Until the pod is read, usage goes to the log and
                             task mode takes no task. Without them it is a plain init that logs usage.
                             The pod's service account needs get, watch and patch on its own pod.
  QSCALER_CONTAINER_NAME     the container name used in the usage annotation key (default: worker).
  QSCALER_QUEUE              task mode: the Redis list to consume.
  QSCALER_REDIS_HOST, QSCALER_REDIS_PORT, QSCALER_REDIS_DB, QSCALER_REDIS_USERNAME, QSCALER_REDIS_TLS
                             task mode: where the broker is (default port 6379, db 0).
  QSCALER_REDIS_PASSWORD     task mode: the broker password (inject it from a Secret); never logged.
  QSCALER_REDIS_TLS_INSECURE task mode, TLS: `true` accepts any server certificate (tests only).
  QSCALER_REDIS_TLS_CA       task mode, TLS: the PEM CA bundle that verifies the broker (from a
                             Secret); unset: the system roots. Also applies to a rediss:// URL.
  QSCALER_REDIS_URL          task mode: a full redis:// (or rediss://) URL instead of the variables
                             above.
  QSCALER_REDIS_SENTINELS, QSCALER_REDIS_SENTINEL_MASTER
                             task mode, Redis Sentinel: host:port,... of the sentinels and the
                             primary's name, instead of the host and port; the sentinels' own login
                             in QSCALER_REDIS_SENTINEL_{USERNAME,PASSWORD,TLS,TLS_INSECURE,TLS_CA}.
  QSCALER_REDIS_CLUSTER      task mode, Redis Cluster: host:port,... seed nodes, instead of the host
                             and port.
  QSCALER_ACTIVITY_SOCKET    wrap mode: path of a unix datagram socket; the worker may send `idle` or
                             `busy` to it and qsupervisor mirrors that to quickube.com/activity. The
                             variable is passed on to the worker.
  QSCALER_MAX_TASK_SECONDS   the longest a task may run (set by the operator from maxTaskSeconds).
                             Without a pod to read the grace from, SIGKILL is expected this + 10 s
                             after SIGTERM (else 30 s).
  RUST_LOG                   log filter (default: info). Logs go to stderr.
  QSCALER_LOG_FORMAT         `text` (default) or `json`: one JSON object per line, as the operator's.

SIGTERM (the kubelet deleting or evicting the pod, `docker stop`) IS A DRAIN:
  task mode: no new task; the running one is not signalled and may finish. Only shortly before the
  grace period ends (2 s before; grace from the pod's deletion, else its
  terminationGracePeriodSeconds, else QSCALER_MAX_TASK_SECONDS + 10 s, else 30 s) does it get SIGTERM,
  then SIGKILL 1 s later; its payload goes back to the queue at once. wrap mode: the worker gets its
  warm-shutdown signal (--drain-signal) once; 1 s before the grace ends it is SIGKILLed. A second
  SIGTERM changes nothing. SIGINT and SIGQUIT are forwarded at once (task mode: the task they kill
  goes back to the queue). qsupervisor also keeps quickube.com/activity, and with it
  cluster-autoscaler.kubernetes.io/safe-to-evict and karpenter.sh/do-not-disrupt, on its pod.

TASK MODE REDIS CONTRACT:
  Producers LPUSH onto <queue>; qsupervisor BLMOVEs from its right end (FIFO) into
  {<queue>}:processing:<namespace>/<pod> (just <pod> when POD_NAMESPACE is unset), runs COMMAND
  with the payload on stdin, LREMs it on exit 0, retries a failure up to --max-retries times
  (count in hash {<queue>}:retries) and then moves it to {<queue>}:dead. It is in the set
  {<queue>}:consumers from before its first take until its list is empty at exit. (A queue name
  with its own hash tag, like {app}:jobs, is used as is: {app}:jobs:processing:...; every key of a
  queue is in its slot on a Redis Cluster.)
  --queue-format stream: <queue> is a stream read as consumer group --stream-group (created at 0 if
  missing) by consumer <namespace>/<pod>; producers XADD <queue> * task <payload>; XACK on exit 0,
  retries per entry id, dead letters XADDed to the stream {<queue>}:dead; an entry given back is
  XCLAIMed to the group's consumer qscaler:returned, whose entries every worker takes first.

EXIT CODE: the worker's own code, or 128+N when signal N killed it; 127/126 when COMMAND cannot be
found/executed; 0 when the worker exited by itself after a drain request. Task mode: 0, or the code of
a task cut at shutdown. A code given to --remap-exit (tini's -e) becomes 0: `-e 143` for a worker
that exits 143 when it stops on SIGTERM. qsupervisor's own codes (2: usage, 1: a system call, 70:
the task agent stopped, 126/127: COMMAND cannot start) are never remapped.

PARENT DEATH (-p, tini's -p): when qsupervisor is not PID 1 but started by another process (a shell
script, a test harness), `-p TERM` has the kernel send it SIGTERM when that process dies, which it
then handles like any SIGTERM (a drain); a forwarded signal (INT, HUP, QUIT, USR1, USR2) is
forwarded, KILL kills it.";

/// How log lines are written: as the operator's `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields.message`, `target`), for log
    /// pipelines that parse them.
    Json,
}

/// PID 1 for queue-worker containers: runs COMMAND, reaps every zombie, forwards signals, reports
/// usage, and on a drain request lets the current task finish before the container exits 0.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "qsupervisor",
    version,
    about,
    after_long_help = ENV_HELP,
    override_usage = "qsupervisor [OPTIONS] -- COMMAND [ARGS]..."
)]
pub struct Options {
    /// Forward signals (and the drain signal) to the worker's whole process group instead of the
    /// worker process only. The worker is started as the leader of a new process group.
    #[arg(short = 'g', long, env = "QSCALER_SIGNAL_GROUP")]
    pub signal_group: bool,

    /// After the worker exits: how long other remaining processes get after SIGTERM before SIGKILL.
    #[arg(long, env = "QSCALER_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,

    /// Wrap mode: the signal that asks the worker to finish its current task and stop (a "warm
    /// shutdown": SIGTERM for Celery, RQ and Sidekiq).
    #[arg(long, env = "QSCALER_DRAIN_SIGNAL", default_value = "TERM", value_parser = parse_signal)]
    pub drain_signal: Signal,

    /// Wrap mode: SIGKILL the worker this long after the drain signal (default: wait forever; the
    /// pod's terminationGracePeriod does not apply to a drain).
    #[arg(long, env = "QSCALER_DRAIN_TIMEOUT", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,

    /// Wrap mode: the drain annotation must stay this long before the drain signal goes out; removing
    /// it earlier cancels the drain (the operator changed its mind).
    #[arg(long, env = "QSCALER_DRAIN_DEBOUNCE", default_value = "500ms", value_parser = parse_duration)]
    pub drain_debounce: Duration,

    /// Task mode: take tasks from the Redis list yourself and run COMMAND once per task, with the
    /// payload on stdin.
    #[arg(long, env = "QSCALER_TASK")]
    pub task: bool,

    /// Task mode: the Redis list (queue) to consume.
    #[arg(long, env = env::QUEUE)]
    pub queue: Option<String>,

    /// Task mode: how many times a failed task is run again before it goes to the dead-letter list.
    #[arg(long, env = "QSCALER_MAX_RETRIES", default_value_t = 3)]
    pub max_retries: u32,

    /// Task mode: the queue's format, `list` or `stream` (the QWorker's scaleConfig.format). A
    /// stream is read as a consumer group: the payload is each entry's `task` field.
    #[arg(long, env = env::QUEUE_FORMAT, default_value = "list", value_parser = parse_format)]
    pub queue_format: QueueFormat,

    /// Task mode on a stream: the consumer group to read as (default `qscaler`).
    #[arg(long, env = env::STREAM_GROUP)]
    pub stream_group: Option<String>,

    /// The longest a task may run, in seconds (the QWorker's scaleConfig.maxTaskSeconds). When the
    /// pod's grace period cannot be read from the Kubernetes API (no pod, `docker stop`), the kubelet's
    /// SIGKILL is assumed this + 10 s after SIGTERM (the grace the operator gives such pods); without
    /// it, 30 s.
    #[arg(long, env = env::MAX_TASK_SECONDS, value_name = "SECONDS")]
    pub max_task_seconds: Option<u64>,

    /// Task mode: a full Redis URL (redis://[user:password@]host:port/db); overrides the
    /// QSCALER_REDIS_* variables.
    #[arg(long, env = ENV_REDIS_URL, hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Task mode: the broker host.
    #[arg(long, env = env::REDIS_HOST)]
    pub redis_host: Option<String>,

    /// Task mode: the broker port.
    #[arg(long, env = env::REDIS_PORT, default_value_t = 6379)]
    pub redis_port: u16,

    /// Task mode: the broker database number.
    #[arg(long, env = env::REDIS_DB, default_value_t = 0)]
    pub redis_db: i64,

    /// Task mode: the broker user name (Redis ACL).
    #[arg(long, env = env::REDIS_USERNAME)]
    pub redis_username: Option<String>,

    /// Task mode: the broker speaks TLS. Its certificate is verified against --redis-tls-ca, or the
    /// system roots when none is given, unless --redis-tls-insecure.
    #[arg(long, env = env::REDIS_TLS)]
    pub redis_tls: bool,

    /// Task mode, TLS: accept any server certificate (test setups only).
    #[arg(long, env = env::REDIS_TLS_INSECURE)]
    pub redis_tls_insecure: bool,

    /// Task mode, TLS: the PEM CA bundle (the text, not a path) that signs the broker's
    /// certificate; the operator injects it from the ScalerConfig's tls.caSecretRef.
    // A PEM starts with "-----": without allow_hyphen_values clap would take it for an option.
    #[arg(
        long,
        env = env::REDIS_TLS_CA,
        hide_env_values = true,
        value_name = "PEM",
        allow_hyphen_values = true
    )]
    pub redis_tls_ca: Option<String>,

    /// Task mode, Redis Sentinel: the sentinels, host:port,host:port (instead of --redis-host).
    #[arg(long, env = env::REDIS_SENTINELS, value_name = "HOST:PORT,...")]
    pub redis_sentinels: Option<String>,

    /// Task mode, Redis Sentinel: the monitored primary's name.
    #[arg(long, env = env::REDIS_SENTINEL_MASTER)]
    pub redis_sentinel_master: Option<String>,

    /// Task mode, Redis Sentinel: the sentinels' user name.
    #[arg(long, env = env::REDIS_SENTINEL_USERNAME)]
    pub redis_sentinel_username: Option<String>,

    /// Task mode, Redis Sentinel: the sentinels speak TLS.
    #[arg(long, env = env::REDIS_SENTINEL_TLS)]
    pub redis_sentinel_tls: bool,

    /// Task mode, Redis Sentinel TLS: accept any sentinel certificate.
    #[arg(long, env = env::REDIS_SENTINEL_TLS_INSECURE)]
    pub redis_sentinel_tls_insecure: bool,

    /// Task mode, Redis Sentinel TLS: the sentinels' PEM CA bundle (the text).
    #[arg(
        long,
        env = env::REDIS_SENTINEL_TLS_CA,
        hide_env_values = true,
        value_name = "PEM",
        allow_hyphen_values = true
    )]
    pub redis_sentinel_tls_ca: Option<String>,

    /// Task mode, Redis Cluster: seed nodes, host:port,host:port (instead of --redis-host).
    #[arg(long, env = env::REDIS_CLUSTER, value_name = "HOST:PORT,...")]
    pub redis_cluster: Option<String>,

    /// How often the worker's process tree and cgroup are sampled (0 turns sampling off).
    #[arg(long, env = "QSCALER_SAMPLE_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub sample_interval: Duration,

    /// Do not read the container's cgroup (usage from the process tree in procfs only).
    #[arg(long, env = "QSCALER_NO_CGROUP")]
    pub no_cgroup: bool,

    /// Usage is reported at most this often (and once at exit).
    #[arg(long, env = "QSCALER_REPORT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub report_interval: Duration,

    /// Usage is reported only when a peak rose by more than this fraction (0.1 = 10%) since the last
    /// report (or an OOM kill was seen).
    #[arg(long, env = "QSCALER_REPORT_RISE", default_value_t = 0.10)]
    pub report_rise: f64,

    /// Wrap mode: bind a unix datagram socket here; the worker sends `idle` or `busy` to it (the path
    /// is passed to the worker in QSCALER_ACTIVITY_SOCKET).
    #[arg(long, env = ENV_ACTIVITY_SOCKET)]
    pub activity_socket: Option<PathBuf>,

    /// The container name, for the usage annotation key.
    #[arg(long, env = env::CONTAINER_NAME, default_value = "worker")]
    pub container: String,

    /// The pod's own name (downward API).
    #[arg(long, env = env::POD_NAME)]
    pub pod_name: Option<String>,

    /// The pod's own namespace (downward API).
    #[arg(long, env = env::POD_NAMESPACE)]
    pub pod_namespace: Option<String>,

    /// Log format.
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Exit 0 instead of CODE (0-255) when the worker ends with it (tini's -e): e.g. 143 for a
    /// worker that stops on SIGTERM by dying of it. Repeatable, or comma-separated.
    #[arg(
        short = 'e',
        long,
        env = "QSCALER_REMAP_EXIT",
        value_name = "CODE",
        value_delimiter = ',',
        value_parser = clap::value_parser!(u8)
    )]
    pub remap_exit: Vec<u8>,

    /// Have the kernel send SIGNAL to qsupervisor when its parent process dies (tini's -p;
    /// PR_SET_PDEATHSIG). It is handled as the same signal from anyone: TERM drains. The kernel's
    /// "parent" is the thread that started qsupervisor: in a threaded spawner, that thread's end.
    #[arg(short = 'p', long, env = "QSCALER_PARENT_DEATH_SIGNAL", value_name = "SIGNAL", value_parser = parse_signal)]
    pub parent_death_signal: Option<Signal>,

    /// The worker (wrap mode) or the per-task command (task mode), after `--`.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// A `scaleConfig.format` name.
fn parse_format(s: &str) -> Result<QueueFormat, String> {
    QueueFormat::parse(s).ok_or_else(|| format!("unknown queue format {s:?}"))
}

impl Options {
    /// Checks that go beyond single values.
    pub fn validate(&self) -> Result<(), String> {
        if self.task && self.queue.as_deref().is_none_or(str::is_empty) {
            return Err(format!("--task needs a queue (--queue or {})", env::QUEUE));
        }
        if self.task && !matches!(self.queue_format, QueueFormat::List | QueueFormat::Stream) {
            return Err(format!(
                "--task consumes a list or a stream, not {}",
                self.queue_format.name()
            ));
        }
        let given = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
        if self.task
            && self.redis_url.is_none()
            && !given(&self.redis_host)
            && !given(&self.redis_sentinels)
            && !given(&self.redis_cluster)
        {
            return Err(format!(
                "--task needs a broker ({ENV_REDIS_URL}, {}, {} or {})",
                env::REDIS_HOST,
                env::REDIS_SENTINELS,
                env::REDIS_CLUSTER
            ));
        }
        if !(0.0..=100.0).contains(&self.report_rise) {
            return Err("--report-rise must be between 0 and 100".into());
        }
        Ok(())
    }

    /// The grace period assumed when the pod's cannot be read: `--max-task-seconds` + the operator's
    /// margin.
    pub fn fallback_grace(&self) -> Option<Duration> {
        self.max_task_seconds.map(|s| {
            Duration::from_secs(
                s.saturating_add(qscaler_crds::qworker::GRACE_MARGIN_SECONDS as u64),
            )
        })
    }

    /// The pod to watch and patch, when both halves of its name are known.
    pub fn pod(&self) -> Option<(String, String)> {
        match (&self.pod_namespace, &self.pod_name) {
            (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
                Some((ns.clone(), name.clone()))
            }
            _ => None,
        }
    }
}

/// Parses a Go-style duration (`500ms`, `1.5s`, `1h30m`, a bare `0`): the one parser of every binary.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    qscaler_crds::duration::parse_flag(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        for (t, d) in [
            ("5s", Duration::from_secs(5)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(t), Ok(d), "{t}");
        }
        for bad in [
            "", "s", "-1s", "5", "5x", "1e999", "five", "5 s s", "1.2.3s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Options::command().debug_assert();
    }

    #[test]
    fn command_after_double_dash() {
        let o =
            Options::try_parse_from(["qsupervisor", "-g", "--grace", "1s", "--", "sleep", "-1"])
                .unwrap();
        assert!(o.signal_group);
        assert_eq!(o.grace, Duration::from_secs(1));
        assert_eq!(
            o.command,
            vec![OsString::from("sleep"), OsString::from("-1")]
        );
        assert!(Options::try_parse_from(["qsupervisor"]).is_err());
    }

    #[test]
    fn task_mode_needs_a_queue_and_a_broker() {
        let o = Options::try_parse_from(["qsupervisor", "--task", "--", "cat"]).unwrap();
        assert!(o.validate().is_err());
    }

    #[test]
    fn task_mode_consumes_a_list_or_a_stream() {
        let task = |format: &str| {
            Options::try_parse_from([
                "qsupervisor",
                "--task",
                "--queue",
                "q",
                "--redis-host",
                "r",
                "--queue-format",
                format,
                "--",
                "cat",
            ])
        };
        let o = task("stream").unwrap();
        assert_eq!(o.queue_format, QueueFormat::Stream);
        assert_eq!(o.validate(), Ok(()));
        assert_eq!(task("list").unwrap().validate(), Ok(()));
        assert!(task("celery").unwrap().validate().is_err());
        assert!(task("nonsense").is_err());
        let o = Options::try_parse_from(["qsupervisor", "--", "w"]).unwrap();
        assert_eq!(o.queue_format, QueueFormat::List);
    }

    #[test]
    fn tini_options_and_log_format() {
        let o = Options::try_parse_from([
            "qsupervisor",
            "-e",
            "143",
            "--remap-exit",
            "1,255",
            "-p",
            "TERM",
            "--log-format",
            "json",
            "--",
            "w",
        ])
        .unwrap();
        assert_eq!(o.remap_exit, vec![143, 1, 255]);
        assert_eq!(o.parent_death_signal, Some(Signal::SIGTERM));
        assert_eq!(o.log_format, LogFormat::Json);
        let o = Options::try_parse_from(["qsupervisor", "--", "w"]).unwrap();
        assert!(o.remap_exit.is_empty());
        assert_eq!(o.parent_death_signal, None);
        assert_eq!(o.log_format, LogFormat::Text);
        for bad in [
            &["-e", "256"][..],
            &["-e", "x"],
            &["-e", ""],
            &["-p", "NOPE"],
            &["-p", "0"],
            &["--log-format", "xml"],
        ] {
            let mut argv = vec!["qsupervisor"];
            argv.extend_from_slice(bad);
            argv.extend_from_slice(&["--", "w"]);
            assert!(Options::try_parse_from(&argv).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parse_duration_never_panics(s in ".{0,20}") {
            let _ = parse_duration(&s);
        }
    }
}
