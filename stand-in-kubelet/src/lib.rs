//! The stand-in kubelet: a Node that runs pods as local processes.
//!
//! - [`node`]: registers the Node and keeps it Ready.
//! - [`binder`]: binds pods without a node to this one (there is no scheduler).
//! - [`pod`]: one task per pod: identity, containers, status, deletion.
//! - [`container`]: one task per container: env, start, wait, restart policy, stop.
//! - [`process`]: the process itself, PID 1 of a new PID namespace.
//! - [`launcher`]: `qscaler-kubelet __launch`, which joins cgroups, unshares and forks that PID 1.
//! - [`cgroup`]: memory/cpu limits and accounting, OOM detection.
//! - [`env`], [`identity`], [`images`]: what a container gets: env vars, a kubeconfig, an argv.
//! - [`events`]: Kubernetes Events about pods (Started, Killing, BackOff, Failed).
//! - [`status`]: the pure rules for pod status (phase, restarts, backoff, reasons).
//!
//! Not modelled: images (a table maps them to local executables), volumes (none are mounted;
//! the service-account token comes as `KUBECONFIG`), networking (every pod is 127.0.0.1 and
//! shares the host's network), probes (a running container is ready), sidecar init containers
//! (`restartPolicy: Always` on an init container), ephemeral containers, lifecycle hooks,
//! securityContext, and image pulls.

pub mod binder;
pub mod cgroup;
pub mod container;
pub mod env;
pub mod events;
pub mod identity;
pub mod images;
pub mod launcher;
pub mod node;
pub mod pod;
pub mod process;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Config};
use tokio::sync::mpsc;
use tracing::Instrument;

/// Command-line options of `qscaler-kubelet`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    version,
    about = "A process-based stand-in kubelet for QScaler's local test cluster"
)]
pub struct Args {
    /// Kubeconfig of the kubelet itself (an admin identity).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Where pod directories go: `<state-dir>/<namespace>_<pod>/{<container>.log,kubeconfig}`.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The image table (stand-in-kubelet/images.toml).
    #[arg(long)]
    pub image_table: PathBuf,
    /// The directory whose executables lead containers' PATH (default: the kubelet's own, which
    /// Cargo builds beside the workspace's other binaries).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The Node's name.
    #[arg(long, default_value = "qscaler-node")]
    pub node_name: String,
    #[arg(long, default_value = "64")]
    pub cpu: String,
    #[arg(long, default_value = "256Gi")]
    pub memory: String,
    #[arg(long, default_value = "1000")]
    pub max_pods: String,
}

/// What every pod and container task shares.
pub struct Node {
    pub client: Client,
    pub name: String,
    pub state_dir: PathBuf,
    pub images: images::ImageTable,
    /// PATH of every container: the workspace's binaries first.
    pub container_path: String,
    pub endpoint: identity::ApiEndpoint,
    pub cgroups: cgroup::Layout,
    /// The launcher executable: this binary (see [`launcher`]).
    pub launcher: PathBuf,
    pub events: events::Events,
}

/// A running pod task.
struct Handle {
    inputs: mpsc::UnboundedSender<pod::Input>,
    join: tokio::task::JoinHandle<()>,
}

/// Run the kubelet until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    let client = Client::try_from(config).context("building the client")?;
    let images = images::ImageTable::load(&args.image_table)?;
    let endpoint = identity::ApiEndpoint::from_kubeconfig(&args.kubeconfig)?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let launcher = std::env::current_exe().context("locating the kubelet's own executable")?;
    let bin_dir = match &args.bin_dir {
        Some(dir) => std::fs::canonicalize(dir).unwrap_or(dir.clone()),
        None => launcher
            .parent()
            .map(std::path::Path::to_path_buf)
            .context("the kubelet's executable has no directory")?,
    };
    let cgroups = cgroup::Layout::detect();
    tracing::info!(?cgroups, "cgroup layout");
    let node = Arc::new(Node {
        client: client.clone(),
        name: args.node_name.clone(),
        state_dir: std::fs::canonicalize(&args.state_dir).unwrap_or(args.state_dir.clone()),
        images,
        container_path: format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            bin_dir.display()
        ),
        endpoint,
        cgroups,
        launcher,
        events: events::Events::new(client.clone(), &args.node_name),
    });

    let capacity = node::Capacity {
        cpu: args.cpu.clone(),
        memory: args.memory.clone(),
        pods: args.max_pods.clone(),
    };
    let since = node::register(&client, &node.name, &capacity).await?;
    let heartbeat = tokio::spawn(node::heartbeat(
        client.clone(),
        node.name.clone(),
        capacity,
        since,
        Duration::from_secs(10),
    ));
    fail_leftover_pods(&client, &node.name).await?;
    let binder = tokio::spawn(binder::run(client.clone(), node.name.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = dispatch(node.clone()) => r,
        _ = term.recv() => { tracing::info!("SIGTERM: stopping"); Ok(()) }
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); Ok(()) }
    };
    binder.abort();
    heartbeat.abort();
    shutdown().await;
    result
}

/// Pod tasks, shared with [`shutdown`] so it can reach them after `dispatch` is dropped.
static PODS: std::sync::Mutex<
    Vec<(
        String,
        mpsc::UnboundedSender<pod::Input>,
        tokio::task::AbortHandle,
    )>,
> = std::sync::Mutex::new(Vec::new());

fn register_handle(uid: &str, h: &Handle) {
    if let Ok(mut pods) = PODS.lock() {
        pods.retain(|(_, tx, _)| !tx.is_closed());
        pods.push((uid.to_string(), h.inputs.clone(), h.join.abort_handle()));
    }
}

/// Kill every container this kubelet started, and wait (bounded) until they are gone.
async fn shutdown() {
    let pods: Vec<_> = PODS.lock().map(|p| p.clone()).unwrap_or_default();
    for (_, tx, _) in &pods {
        let _ = tx.send(pod::Input::Shutdown);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    for (uid, tx, abort) in pods {
        while !tx.is_closed() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !tx.is_closed() {
            tracing::warn!(uid, "pod task did not stop in time");
            abort.abort();
        }
    }
    tracing::info!("all pod processes stopped");
}

/// Pods bound here that this (new) kubelet is not running: their processes are gone, so they
/// are marked Failed (reason NodeRestart); those already being deleted are finalized.
async fn fail_leftover_pods(client: &Client, node: &str) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(client.clone());
    let pods = api
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .context("listing pods of this node")?;
    for p in pods {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if p.metadata.deletion_timestamp.is_some() {
            let _ = api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        let phase = status::Phase::parse(p.status.as_ref().and_then(|s| s.phase.as_deref()));
        if phase.is_some_and(status::Phase::is_terminal) {
            continue;
        }
        tracing::info!(pod = %format!("{ns}/{name}"), "left over from a previous kubelet: Failed");
        let patch = serde_json::json!({"status": {
            "phase": "Failed", "reason": "NodeRestart",
            "message": "the stand-in kubelet restarted; its processes are gone",
        }});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(pod = %name, error = %e, "marking a left-over pod Failed");
        }
    }
    Ok(())
}

/// Watch the pods bound to this node and feed each to its task.
async fn dispatch(node: Arc<Node>) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(node.client.clone());
    let stream = watcher(
        api,
        watcher::Config::default().fields(&format!("spec.nodeName={}", node.name)),
    )
    .default_backoff();
    futures::pin_mut!(stream);
    let mut pods: HashMap<String, Handle> = HashMap::new();
    let mut relisted: Option<HashSet<String>> = None;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "watching pods of this node");
                continue;
            }
        };
        match event {
            watcher::Event::Apply(p) => apply(&node, &mut pods, p),
            watcher::Event::InitApply(p) => {
                if let (Some(seen), Some(uid)) = (relisted.as_mut(), p.metadata.uid.clone()) {
                    seen.insert(uid);
                }
                apply(&node, &mut pods, p)
            }
            watcher::Event::Delete(p) => {
                if let Some(h) = p.metadata.uid.as_ref().and_then(|u| pods.remove(u)) {
                    let _ = h.inputs.send(pod::Input::Gone);
                }
            }
            watcher::Event::Init => relisted = Some(HashSet::new()),
            watcher::Event::InitDone => {
                // Pods missing from a relist were deleted while the watch was down.
                if let Some(seen) = relisted.take() {
                    pods.retain(|uid, h| {
                        let keep = seen.contains(uid);
                        if !keep {
                            let _ = h.inputs.send(pod::Input::Gone);
                        }
                        keep
                    });
                }
            }
        }
        pods.retain(|_, h| !h.join.is_finished());
    }
    Ok(())
}

fn apply(node: &Arc<Node>, pods: &mut HashMap<String, Handle>, p: Pod) {
    let Some(uid) = p.metadata.uid.clone() else {
        return;
    };
    if let Some(h) = pods.get(&uid) {
        let _ = h.inputs.send(pod::Input::Update(Box::new(p)));
        return;
    }
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let name = p.metadata.name.clone().unwrap_or_default();
    let (tx, rx) = mpsc::unbounded_channel();
    let span = tracing::info_span!("pod", pod = %format!("{ns}/{name}"));
    let join = tokio::spawn(pod::run(node.clone(), p, rx).instrument(span));
    let h = Handle { inputs: tx, join };
    register_handle(&uid, &h);
    pods.insert(uid, h);
}
