//! The stand-in kubelet of the local test cluster (see `qscaler_stand_in_kubelet`).
//!
//! `qscaler-kubelet __launch ...` is its container launcher (see `qscaler_stand_in_kubelet::launcher`);
//! it must stay single-threaded, so it is dispatched before the runtime starts.

use clap::Parser;
use qscaler_stand_in_kubelet::{self as kubelet, launcher};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(launcher::LAUNCH_ARG) {
        match launcher::parse(&args[2..]) {
            Ok(l) => launcher::run(l),
            Err(e) => {
                eprintln!("qscaler-kubelet {}: {e}", launcher::LAUNCH_ARG);
                std::process::exit(125);
            }
        }
    }
    let opts = kubelet::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn")),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(kubelet::run(opts));
    // Pod processes are gone by now; do not wait on idle connections or blocking threads.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}
