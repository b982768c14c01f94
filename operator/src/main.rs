//! `qscaler-operator`: flags (each also an env var `QSCALER_*`), logging, the Kubernetes client,
//! signals; then [`qscaler_operator::run::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use qscaler_crds::duration::parse_flag as parse_duration;
use qscaler_crds::names;
use qscaler_operator::context::Settings;
use qscaler_operator::crash::BackoffSettings;
use qscaler_operator::run::{run, Options};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Scales QWorker pods by queue depth and drains exactly the pods that must go.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Kubeconfig file (default: in-cluster service account, else $KUBECONFIG / ~/.kube/config).
    #[arg(long, env = "QSCALER_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, env = "QSCALER_CONTEXT")]
    context: Option<String>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "QSCALER_NAMESPACE")]
    namespace: Option<String>,
    /// How often queues are read (e.g. 500ms, 1s).
    #[arg(long, env = "QSCALER_POLL_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Scale-down stabilization window when a QWorker sets none (scaleConfig.scaleDownStabilizationSeconds).
    #[arg(long, env = "QSCALER_SCALE_DOWN_STABILIZATION", default_value = "30s", value_parser = parse_duration)]
    scale_down_stabilization: Duration,
    /// First delay before replacing a failed worker; doubles per failure in a row.
    #[arg(long, env = "QSCALER_CRASH_BACKOFF_BASE", default_value = "1s", value_parser = parse_duration)]
    crash_backoff_base: Duration,
    /// Longest delay before replacing a failed worker.
    #[arg(long, env = "QSCALER_CRASH_BACKOFF_MAX", default_value = "5m", value_parser = parse_duration)]
    crash_backoff_max: Duration,
    /// How long workers must run (or no worker fail) before a crash-loop streak ends.
    #[arg(long, env = "QSCALER_CRASH_HEALTHY_AFTER", default_value = "60s", value_parser = parse_duration)]
    crash_healthy_after: Duration,
    /// How often a ScalerConfig's secret is re-read and its status refreshed.
    #[arg(long, env = "QSCALER_HEALTH_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    health_interval: Duration,
    /// Broker connect/response timeout.
    #[arg(long, env = "QSCALER_BROKER_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    broker_timeout: Duration,
    /// Leader election through a Lease (default: on in-cluster, off out-of-cluster).
    #[arg(long, env = "QSCALER_LEADER_ELECT", num_args = 0..=1, default_missing_value = "true")]
    leader_elect: Option<bool>,
    /// Namespace of the Lease (default: the operator's own namespace, else "default").
    #[arg(long, env = "QSCALER_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, env = "QSCALER_LEASE_NAME", default_value = "qscaler-operator")]
    lease_name: String,
    /// Address of /metrics (port 0: any free port, logged at start). `--metrics-addr` is the old name.
    #[arg(
        long,
        visible_alias = "metrics-addr",
        env = "QSCALER_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    metrics_bind_address: SocketAddr,
    /// Address of /healthz, /livez and /readyz (port 0: any free port, logged at start).
    #[arg(
        long,
        env = "QSCALER_HEALTH_PROBE_BIND_ADDRESS",
        default_value = "0.0.0.0:8081"
    )]
    health_probe_bind_address: SocketAddr,
    /// Log format.
    #[arg(long, env = names::env::LOG_FORMAT, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// Whether text logs are coloured: only on a terminal, and not when `NO_COLOR` is set to a
/// non-empty value (no-color.org).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

const SA_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

async fn client(args: &Args) -> anyhow::Result<(kube::Client, bool)> {
    let in_cluster =
        args.kubeconfig.is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer()
            .await
            .context("no in-cluster config and no kubeconfig")?,
    };
    Ok((kube::Client::try_from(config)?, in_cluster))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal (logs go to stdout): `kubectl logs` and files get plain text.
    let ansi = colour(
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
        std::env::var_os("NO_COLOR"),
    );
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_ansi(false)
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_env_filter(filter)
            .init(),
    }

    let (client, in_cluster) = client(&args).await?;
    let leader_elect = args.leader_elect.unwrap_or(in_cluster);
    let lease_namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .or_else(|| {
            std::fs::read_to_string(SA_NAMESPACE)
                .ok()
                .map(|s| s.trim().to_string())
        })
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "qscaler-operator".into());
    let opts = Options {
        namespace: args.namespace.clone(),
        settings: Settings {
            poll_interval: args.poll_interval.max(Duration::from_millis(50)),
            stabilization: args.scale_down_stabilization,
            backoff: BackoffSettings {
                base: args.crash_backoff_base,
                max: args.crash_backoff_max.max(args.crash_backoff_base),
                healthy_after: args.crash_healthy_after,
            },
            expectation_timeout: Duration::from_secs(30),
            health_interval: args.health_interval.max(Duration::from_secs(1)),
            broker_timeout: args.broker_timeout,
            reading_max_age: (args.poll_interval * 4).max(Duration::from_secs(5))
                + args.broker_timeout * 2,
        },
        leader_election: leader_elect.then(|| (lease_namespace, args.lease_name.clone())),
        identity: format!("{host}_{}", std::process::id()),
        metrics_addr: args.metrics_bind_address,
        probe_addr: args.health_probe_bind_address,
    };
    tracing::info!(?opts, "starting qscaler-operator");

    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown signal received; finishing reconciles");
    };
    run(client, opts, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("2").is_err(), "Go needs a unit");
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn flags_parse() {
        let a = Args::try_parse_from([
            "q",
            "--namespace",
            "n",
            "--leader-elect=false",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(a.leader_elect, Some(false));
        assert_eq!(a.metrics_bind_address.port(), 0);
        assert_eq!(a.health_probe_bind_address.port(), 8081);
        let a = Args::try_parse_from([
            "q",
            "--metrics-bind-address=127.0.0.1:9090",
            "--health-probe-bind-address=127.0.0.1:9091",
        ])
        .unwrap();
        assert_eq!(a.metrics_bind_address.port(), 9090);
        assert_eq!(a.health_probe_bind_address.port(), 9091);
        let a = Args::try_parse_from(["q", "--leader-elect"]).unwrap();
        assert_eq!(a.metrics_bind_address.port(), 8080);
        assert_eq!(a.leader_elect, Some(true));
        Args::command().debug_assert();
    }

    use clap::CommandFactory;
}
