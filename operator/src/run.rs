//! Wiring: startup checks, the shared reflectors, both controllers, leader election, the operations
//! endpoint and graceful shutdown. Everything that decides lives elsewhere.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{reflector, watcher, Controller, WatchStreamExt};
use kube::{Api, Client};
use qscaler_crds::names;
use qscaler_crds::{QWorker, ScalerConfig};

use crate::context::{Context, Settings};
use crate::leader::LeaderElector;
use crate::memory::MemoryStore;
use crate::metrics::Metrics;
use crate::object_key::ObjectKey;
use crate::pod_index::PodIndex;
use crate::poller::Pollers;
use crate::readings::Readings;
use crate::triggers::Triggers;
use crate::{qworker_controller, scalerconfig_controller, server};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch only this namespace (None: all).
    pub namespace: Option<String>,
    pub settings: Settings,
    /// Lease (namespace, name) when leader election is on.
    pub leader_election: Option<(String, String)>,
    pub identity: String,
    pub metrics_addr: SocketAddr,
    /// Address of /healthz, /livez and /readyz.
    pub probe_addr: SocketAddr,
}

pub const INSTALL_HINT: &str = "install the CRDs first: kubectl apply --server-side -f crds/qworker.yaml -f crds/scalerconfig.yaml (or ./install.sh)";

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Checks that both CRDs are served and listable with our credentials.
pub async fn check_crds(client: &Client, ns: Option<&str>) -> anyhow::Result<()> {
    let lp = ListParams::default().limit(1);
    let hint = |what: &str, e: kube::Error| match &e {
        kube::Error::Api(a) if a.code == 404 => {
            anyhow::anyhow!("the {what} CRD is not installed ({e}); {INSTALL_HINT}")
        }
        kube::Error::Api(a) if a.code == 403 => anyhow::anyhow!(
            "not allowed to list {what}s ({e}); check the operator's RBAC (install.sh creates it)"
        ),
        _ => anyhow::anyhow!("cannot list {what}s: {e}"),
    };
    api::<QWorker>(client, ns)
        .list(&lp)
        .await
        .map_err(|e| hint("QWorker", e))?;
    api::<ScalerConfig>(client, ns)
        .list(&lp)
        .await
        .map_err(|e| hint("ScalerConfig", e))?;
    Ok(())
}

/// Runs until `shutdown` resolves (or leadership is lost: then an error, so the process restarts).
pub async fn run(
    client: Client,
    opts: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ns = opts.namespace.as_deref();
    check_crds(&client, ns).await?;

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (bound, server_task) = server::serve(
        opts.metrics_addr,
        opts.probe_addr,
        metrics.clone(),
        ready.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot listen on {} and {}",
            opts.metrics_addr, opts.probe_addr
        )
    })?;
    tracing::info!(addr = %bound.metrics, "serving /metrics");
    tracing::info!(addr = %bound.probes, "serving /healthz, /livez, /readyz");

    let shutdown = shutdown.shared();
    let elector = match &opts.leader_election {
        Some((lease_ns, lease_name)) => {
            ready.store(true, Ordering::Relaxed);
            let e = LeaderElector::new(client.clone(), lease_ns, lease_name, opts.identity.clone());
            tokio::select! {
                _ = e.acquire() => {}
                _ = shutdown.clone() => { server_task.abort(); return Ok(()); }
            }
            ready.store(false, Ordering::Relaxed);
            Some(e)
        }
        None => None,
    };

    // The pod and ScalerConfig reflectors are driven by their own tasks, which also say when each has
    // listed everything (InitDone). Everyone else waits on that flag, never on `Store::wait_until_ready`
    // from several tasks at once (kube-runtime 5's DelayedInit wakes only one concurrent waiter).
    let pods = Arc::new(PodIndex::default());
    let (pod_tx, pod_rx) = futures::channel::mpsc::unbounded::<Pod>();
    let (pods_ready_tx, mut pods_ready) = tokio::sync::watch::channel(false);
    let pod_task = {
        let pods = pods.clone();
        drive(
            "pod",
            watcher(
                api::<Pod>(&client, ns),
                watcher::Config::default().labels(names::LABEL_QWORKER),
            )
            .inspect_ok(move |ev| pods.apply(ev)),
            pod_tx,
            pods_ready_tx,
        )
    };
    let (scalers, sc_writer) = reflector::store::<ScalerConfig>();
    let (sc_obj_tx, sc_obj_rx) = futures::channel::mpsc::unbounded::<ScalerConfig>();
    let (sc_ready_tx, mut sc_ready) = tokio::sync::watch::channel(false);
    let sc_task = drive(
        "ScalerConfig",
        reflector(
            sc_writer,
            watcher(api::<ScalerConfig>(&client, ns), watcher::Config::default()),
        ),
        sc_obj_tx,
        sc_ready_tx,
    );
    let (caches_tx, caches) = tokio::sync::watch::channel(false);
    let ready_task = {
        let ready = ready.clone();
        tokio::spawn(async move {
            let _ = pods_ready.wait_for(|r| *r).await;
            let _ = sc_ready.wait_for(|r| *r).await;
            let _ = caches_tx.send(true);
            ready.store(true, Ordering::Relaxed);
            tracing::info!("caches synced; ready");
        })
    };
    let pod_stream = pod_rx.map(Ok::<Pod, watcher::Error>);
    let sc_stream = sc_obj_rx.map(Ok::<ScalerConfig, watcher::Error>);

    let (qw_tx, qw_rx) = futures::channel::mpsc::unbounded();
    let (sc_tx, sc_rx) = futures::channel::mpsc::unbounded();
    let qw_controller = Controller::new(api::<QWorker>(&client, ns), watcher::Config::default())
        .owns_stream(pod_stream)
        .reconcile_on(qw_rx);
    let sc_controller = Controller::for_stream(sc_stream, scalers.clone()).reconcile_on(sc_rx);

    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "qscaler-operator".into(),
                instance: Some(opts.identity.clone()),
            },
        ),
        metrics,
        settings: opts.settings.clone(),
        pods: pods.clone(),
        caches,
        qworkers: qw_controller.store(),
        scalers: scalers.clone(),
        memory: MemoryStore::default(),
        readings: Arc::new(Readings::default()),
        pollers: Pollers::default(),
        triggers: Triggers {
            qworker: qw_tx,
            scaler: sc_tx,
        },
    });

    // Forget what the operator remembers about QWorkers that are gone (memory, readings, gauges).
    let gc_task = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let live: std::collections::HashSet<ObjectKey> = ctx
                    .qworkers
                    .state()
                    .iter()
                    .map(|q| ObjectKey::of(q.as_ref()))
                    .collect();
                for key in ctx.memory.forget_all_but(&live) {
                    ctx.readings.forget(&key);
                    ctx.metrics
                        .forget(&[("namespace", &key.namespace), ("qworker", &key.name)]);
                }
            }
        })
    };

    let qw_run = qw_controller
        .graceful_shutdown_on(shutdown.clone())
        .run(
            qworker_controller::reconcile,
            qworker_controller::error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "qworker controller event");
            }
        });
    let sc_run = sc_controller
        .graceful_shutdown_on(shutdown.clone())
        .run(
            scalerconfig_controller::reconcile,
            scalerconfig_controller::error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "scalerconfig controller event");
            }
        });
    tracing::info!(namespace = ns.unwrap_or("<all>"), "controllers started");

    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    let deadline = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            tokio::time::sleep(std::time::Duration::from_secs(15)).await;
            tracing::warn!(
                "reconciles did not finish within 15 s of the shutdown signal; stopping anyway"
            );
        }
    };
    let result = tokio::select! {
        _ = futures::future::join(qw_run, sc_run) => Ok(()),
        _ = deadline => Ok(()),
        _ = lost => Err(anyhow::anyhow!("lost leadership")),
    };
    ready_task.abort();
    gc_task.abort();
    pod_task.abort();
    sc_task.abort();
    // Stops every poller (their handles abort the tasks on drop).
    ctx.pollers.stop_all();
    if let Some(e) = &elector {
        if result.is_ok() {
            e.release().await;
        }
    }
    server_task.abort();
    tracing::info!("stopped");
    result
}

/// Drives a reflector stream: forwards touched objects to a controller, flags the first full list.
fn drive<K>(
    what: &'static str,
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    objects: futures::channel::mpsc::UnboundedSender<K>,
    listed: tokio::sync::watch::Sender<bool>,
) -> tokio::task::JoinHandle<()>
where
    K: Send + 'static,
{
    let stream = stream
        .default_backoff()
        .inspect_ok(move |ev| {
            if matches!(ev, watcher::Event::InitDone) {
                listed.send_replace(true);
            }
        })
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(obj) => {
                    let _ = objects.unbounded_send(obj);
                }
                Err(e) => tracing::warn!(error = %e, "{what} watch failed; retrying"),
            }
        }
    })
}
