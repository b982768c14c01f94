//! `kubectl qworker`: rollouts and resource usage of QWorkers, from the command line.
//!
//! - [`cli`]: the command-line options (clap derive; the doc comments are the `--help`).
//! - [`client`]: the Kubernetes client from `--kubeconfig`/`--context`, and the namespace to use.
//! - [`completion`]: shell completion: `completion SHELL` scripts and `kubectl_complete-qworker`.
//! - [`error`]: every failure, worded to say what to do about it.
//! - [`rollout`]: `rollout status|restart|history|undo`.
//! - [`top`]: `top`: queue, workers and per-pod usage.
//! - [`timeline`]: `timeline`: a QWorker recorded over time, drawn as SVG or PNG.
//! - [`revisions`]: the revision history (ControllerRevisions) as plain rows; which one `undo` picks.
//! - [`table`], [`output`]: aligned kubectl-style tables, and `-o json|yaml`.
//! - [`duration`]: parsing and printing of `--timeout` values (quantities come from `qscaler_crds::quantity`).
//!
//! Every subcommand fetches objects, turns them into rows with a pure function, and renders the rows
//! into an `impl Write`, so that the tables are tested with golden files.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod completion;
pub mod duration;
pub mod error;
pub mod output;
pub mod revisions;
pub mod rollout;
pub mod table;
#[doc(hidden)]
pub mod testing;
pub mod timeline;
pub mod top;

use std::io::Write;
use std::process::ExitCode;

pub use cli::Cli;
pub use error::{Error, Result};

/// Runs one command line; output goes to `out`, the exit code comes back.
pub async fn run(cli: Cli, out: &mut impl Write) -> Result<ExitCode> {
    if let cli::Command::Completion(args) = &cli.command {
        // A completion script needs no cluster.
        return completion::write_script(args.shell, out);
    }
    if let cli::Command::Timeline(args) = &cli.command {
        // Connects only to record: drawing saved samples needs no cluster.
        return timeline::run(&cli.kube, args, out).await;
    }
    let ctx = client::connect(&cli.kube).await?;
    match cli.command {
        cli::Command::Rollout(rollout) => rollout::run(&ctx, rollout.command, out).await,
        cli::Command::Top(args) => top::run(&ctx, &args, out).await,
        cli::Command::Completion(_) => unreachable!("handled above"),
        cli::Command::Timeline(_) => unreachable!("handled above"),
    }
}
