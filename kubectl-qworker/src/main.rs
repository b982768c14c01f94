//! `kubectl-qworker`: process setup and one call. Everything else lives in the library.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use kubectl_qworker::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return kubectl_qworker::cli::usage_exit_code(&e);
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(kubectl_qworker::run(cli, &mut std::io::stdout())) {
        Ok(code) => code,
        Err(e) => fail(&anyhow::Error::new(e)),
    }
}

/// Logs go to stderr, `warn` unless `RUST_LOG` says otherwise (kube's own connection errors are
/// left out: the error message says the same with a hint).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,kube_client::client::builder=off")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Prints `error: ...` the way kubectl does and exits 1.
fn fail(e: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {e}");
    ExitCode::FAILURE
}
