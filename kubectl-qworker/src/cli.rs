//! The command line. The doc comments below are what `--help` prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::parse_duration;

/// Rollouts and resource usage of QScaler QWorkers.
///
/// Installed on PATH as `kubectl-qworker`, it runs as `kubectl qworker ...`.
#[derive(Parser, Debug)]
#[command(name = "kubectl-qworker", bin_name = "kubectl qworker", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Where to connect, as kubectl's own flags.
#[derive(Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// The namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a shell completion script for `kubectl-qworker` (bash, zsh, fish, elvish, powershell).
    ///
    /// E.g. `source <(kubectl-qworker completion bash)`. For `kubectl qworker <TAB>` (kubectl 1.26 or
    /// later, with kubectl's own completion loaded) put `kubectl_complete-qworker`, which ships
    /// beside this binary, on PATH too: kubectl runs it, and it also completes QWorker names.
    Completion(CompletionArgs),
    /// Manage the rollout of a QWorker: status, restart, history, undo.
    Rollout(RolloutArgs),
    /// Show queue, workers and CPU/memory use (now/peak, from the supervisors' reports) per pod.
    ///
    /// Per QWorker: the queue depth, tasks in flight and the worker counts. Per worker pod: its
    /// pod-spec hash (current or old), its phase (or Draining(reason) / Terminating, with (busy) or
    /// (idle) when the worker says), and CPU and memory as `NOW/PEAK (req R, rec V, lim L)`: use at
    /// the supervisor's last report and the peak since the container started, against the requests,
    /// the vertical-sizing recommendation (only with activateVPA) and the limits. `<none reported>`
    /// until the supervisor's first report; `<unreadable report>` for a malformed one.
    Top(TopArgs),
    /// Record a QWorker over time and draw it as an SVG or PNG timeline.
    ///
    /// Every --interval: queue depth, in flight, desired, current and draining workers, and each
    /// pod's state (pending, running idle/busy, draining, ended) as a bar; the QWorker's Events
    /// (scaled up/down, draining) as marks on the time axis. --save-samples keeps the recording;
    /// --from-samples draws it again without a cluster.
    Timeline(crate::timeline::TimelineArgs),
}

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to write the script for.
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: RolloutCommand,
}

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Watch a rollout until it finishes, like `kubectl rollout status`.
    ///
    /// Exits 0 once every worker runs the current pod spec, 1 on --timeout, on an invalid spec,
    /// or when the QWorker is deleted. With --watch=false, prints the state once and exits 0
    /// (as kubectl does) unless the spec is invalid.
    Status(StatusArgs),
    /// Start a new rollout of the same pod spec (sets the quickube.com/restartedAt pod annotation).
    Restart(NameArg),
    /// List the recorded revisions, or show one pod template with --revision.
    ///
    /// The operator records each pod template as a ControllerRevision; CHANGE-CAUSE is the
    /// revision's kubernetes.io/change-cause annotation.
    History(HistoryArgs),
    /// Roll back to the previous revision, or to the one given by --to-revision.
    ///
    /// The previous revision is the newest one whose pod template differs from the current spec.
    /// The revision's podSpec and podMetadata replace the spec's as wholes; the operator then rolls
    /// out. If the spec already matches the revision, says "skipped rollback" and exits 0, as kubectl.
    Undo(UndoArgs),
}

#[derive(Args, Debug)]
pub struct NameArg {
    /// The QWorker's name.
    pub name: String,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The QWorker's name.
    pub name: String,

    /// Keep watching until the rollout finishes (--watch=false prints the state once).
    #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub watch: bool,

    /// Give up after this long (e.g. 30s, 5m, 1h30m; 0 waits forever).
    #[arg(long, default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The QWorker's name.
    pub name: String,

    /// Show the pod template of this revision.
    #[arg(long, value_name = "N")]
    pub revision: Option<i64>,

    /// Output format (default: a table).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Args, Debug)]
pub struct UndoArgs {
    /// The QWorker's name.
    pub name: String,

    /// The revision to roll back to (default, or 0: the previous one).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub to_revision: i64,
}

#[derive(Args, Debug, Default)]
pub struct TopArgs {
    /// Only this QWorker (default: every QWorker of the namespace).
    pub name: Option<String>,

    /// QWorkers of every namespace.
    #[arg(short = 'A', long, conflicts_with = "name")]
    pub all_namespaces: bool,

    /// Only QWorkers with these labels (e.g. team=mail).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// One row per container instead of per pod.
    #[arg(long)]
    pub containers: bool,

    /// Sort the workers by current use, highest first.
    #[arg(long, value_enum, value_name = "RESOURCE")]
    pub sort_by: Option<SortBy>,

    /// Leave out the header rows.
    #[arg(long)]
    pub no_headers: bool,

    /// Output format (default: tables).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,

    /// Show the tables again every --interval until Ctrl-C: redrawn in place on a terminal (as
    /// `watch`), else one after another, each followed by a blank line (as `kubectl get -w`).
    #[arg(short = 'w', long, conflicts_with = "output")]
    pub watch: bool,

    /// How often --watch looks again (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = parse_interval, value_name = "DURATION")]
    pub interval: Duration,
}

/// A --watch interval: a duration above zero (zero would ask the API server without pause).
fn parse_interval(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("the interval must be above zero, e.g. 2s or 500ms".into()),
        d => Ok(d),
    }
}

/// The exit code of a command line clap refused: 1 for a usage error, as kubectl (clap's own is 2);
/// 0 for `--help` and `--version`, which clap also reports as errors.
pub fn usage_exit_code(err: &clap::Error) -> ExitCode {
    if err.use_stderr() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    Cpu,
    Memory,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    Yaml,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn watch_takes_an_explicit_false_and_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "kubectl-qworker",
            "rollout",
            "status",
            "w",
            "--watch=false",
            "-n",
            "ns",
            "--timeout",
            "30s",
        ])
        .unwrap();
        assert_eq!(cli.kube.namespace.as_deref(), Some("ns"));
        match cli.command {
            Command::Rollout(RolloutArgs {
                command: RolloutCommand::Status(s),
            }) => {
                assert!(!s.watch);
                assert_eq!(s.timeout, std::time::Duration::from_secs(30));
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["kubectl-qworker", "rollout", "status", "w", "-w"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Rollout(RolloutArgs {
                command: RolloutCommand::Status(StatusArgs { watch: true, .. })
            })
        ));
    }

    #[test]
    fn top_refuses_a_name_with_all_namespaces_and_unknown_sort_keys() {
        assert!(Cli::try_parse_from(["kubectl-qworker", "top", "x", "-A"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-qworker", "top", "--sort-by=disk"]).is_err());
        assert!(Cli::try_parse_from([
            "kubectl-qworker",
            "top",
            "--sort-by=memory",
            "-A",
            "-o",
            "yaml"
        ])
        .is_ok());
        assert!(Cli::try_parse_from([
            "kubectl-qworker",
            "rollout",
            "status",
            "w",
            "--timeout",
            "soon"
        ])
        .is_err());
    }

    #[test]
    fn top_watch_takes_an_interval_above_zero_and_no_output_format() {
        let top = |args: &[&str]| {
            Cli::try_parse_from([&["kubectl-qworker", "top"], args].concat()).map(|cli| {
                match cli.command {
                    Command::Top(top) => (top.watch, top.interval),
                    other => panic!("{other:?}"),
                }
            })
        };
        assert_eq!(top(&[]).unwrap(), (false, Duration::from_secs(2)));
        assert_eq!(top(&["-w"]).unwrap(), (true, Duration::from_secs(2)));
        assert_eq!(
            top(&["--watch", "--interval", "500ms"]).unwrap(),
            (true, Duration::from_millis(500))
        );
        assert!(top(&["-w", "--interval", "0"]).is_err());
        assert!(top(&["-w", "--interval", "soon"]).is_err());
        assert!(top(&["-w", "-o", "json"]).is_err());
    }

    #[test]
    fn usage_errors_exit_1_and_help_and_version_exit_0() {
        let code = |args: &[&str]| {
            usage_exit_code(&Cli::try_parse_from(args).expect_err("clap refuses it"))
        };
        assert_eq!(
            code(&["kubectl-qworker", "top", "--sort-by=disk"]),
            ExitCode::FAILURE
        );
        assert_eq!(code(&["kubectl-qworker", "frobnicate"]), ExitCode::FAILURE);
        assert_eq!(
            code(&["kubectl-qworker", "rollout", "status"]),
            ExitCode::FAILURE
        );
        // No subcommand: the help, as an error (kubectl exits 1 there too).
        assert_eq!(code(&["kubectl-qworker"]), ExitCode::FAILURE);
        assert_eq!(code(&["kubectl-qworker", "--help"]), ExitCode::SUCCESS);
        assert_eq!(code(&["kubectl-qworker", "top", "-h"]), ExitCode::SUCCESS);
        assert_eq!(code(&["kubectl-qworker", "--version"]), ExitCode::SUCCESS);
    }

    #[test]
    fn completion_takes_a_shell() {
        let cli = Cli::try_parse_from(["kubectl-qworker", "completion", "zsh"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Completion(CompletionArgs {
                shell: clap_complete::Shell::Zsh
            })
        ));
        assert!(Cli::try_parse_from(["kubectl-qworker", "completion", "cmd.exe"]).is_err());
    }
}
