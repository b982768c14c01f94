//! One pod on this node: identity, init containers in order, then the containers side by side;
//! status written as the containers change; on deletion, stop them and finalize the pod.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::container::{Job, Report, Stop};
use super::status::{self, ContainerRecord, Init, Phase, PodView, RestartPolicy};
use super::{env, identity, Node};

/// What the node tells a pod task.
#[derive(Debug)]
pub enum Input {
    /// The pod object changed.
    Update(Box<Pod>),
    /// The pod object is gone from the API (force-deleted): kill, do not finalize.
    Gone,
    /// The kubelet is shutting down: kill, leave the pod object alone.
    Shutdown,
}

/// Where the pod's files live: `<state-dir>/<namespace>_<name>`.
pub fn pod_dir(node: &Node, namespace: &str, name: &str) -> std::path::PathBuf {
    node.state_dir.join(format!("{namespace}_{name}"))
}

/// The grace period of a deletion: the one the deletion set, else the pod's, else 30 s.
pub fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

struct PodTask {
    node: Arc<Node>,
    pod: Pod,
    ns: String,
    name: String,
    uid: String,
    policy: RestartPolicy,
    qos_class: &'static str,
    start_time: Timestamp,
    init_records: Vec<ContainerRecord>,
    records: Vec<ContainerRecord>,
    init: Init,
    next_init: usize,
    active: usize,
    conditions: Vec<PodCondition>,
    written: Option<PodStatus>,
    dirty: bool,
    reports_tx: mpsc::UnboundedSender<Report>,
    stop_tx: watch::Sender<Stop>,
    deleting: bool,
    abandon: bool,
}

/// Run a pod until it is deleted (or gone, or the node shuts down).
pub async fn run(node: Arc<Node>, pod: Pod, mut inputs: mpsc::UnboundedReceiver<Input>) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let phase = Phase::parse(pod.status.as_ref().and_then(|s| s.phase.as_deref()));
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let (stop_tx, _) = watch::channel(Stop::No);
    let spec = pod.spec.clone().unwrap_or_default();
    let mut task = PodTask {
        policy: RestartPolicy::parse(spec.restart_policy.as_deref()),
        qos_class: status::qos_class(&spec),
        init_records: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or("")))
            .collect(),
        records: spec
            .containers
            .iter()
            .map(|c| ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or("")))
            .collect(),
        init: Init::Pending,
        next_init: 0,
        active: 0,
        conditions: vec![],
        written: None,
        dirty: false,
        reports_tx,
        stop_tx,
        deleting: pod.metadata.deletion_timestamp.is_some(),
        abandon: false,
        start_time: Timestamp::now(),
        node,
        pod,
        ns,
        name,
        uid,
    };

    if phase.is_some_and(Phase::is_terminal) || task.deleting {
        // Ended before this kubelet saw it (or deleted before it started): nothing to run.
        task.idle_until_deleted(&mut inputs).await;
        return;
    }

    tracing::info!("starting");
    task.dirty = true;
    task.write_status().await;
    let Some(kubeconfig) = task.identity(&mut inputs).await else {
        task.finish().await;
        return;
    };
    let dir = pod_dir(&task.node, &task.ns, &task.name);
    task.start_next(&kubeconfig, &dir);

    let mut retry = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            Some(report) = reports.recv() => {
                task.apply(report, &kubeconfig, &dir);
                while let Ok(more) = reports.try_recv() {
                    task.apply(more, &kubeconfig, &dir);
                }
                task.write_status().await;
            }
            input = inputs.recv() => task.input(input),
            _ = retry.tick() => if task.dirty { task.write_status().await },
        }
        if (task.deleting || task.abandon) && task.active == 0 {
            break;
        }
        if task.phase().is_terminal() && task.active == 0 && !task.dirty {
            tracing::info!(phase = task.phase().as_str(), "ended");
            task.idle_until_deleted(&mut inputs).await;
            return;
        }
    }
    task.finish().await;
}

impl PodTask {
    fn api(&self) -> Api<Pod> {
        Api::namespaced(self.node.client.clone(), &self.ns)
    }

    fn phase(&self) -> Phase {
        status::phase(self.init, &self.records, self.policy)
    }

    /// React to the node's news about the pod.
    fn input(&mut self, input: Option<Input>) {
        match input {
            Some(Input::Update(pod)) => {
                if pod.metadata.deletion_timestamp.is_some() && !self.deleting {
                    let grace = grace_period(&pod);
                    tracing::info!(pod = %self.name, grace_s = grace.as_secs(), "deleted: stopping containers");
                    self.deleting = true;
                    let _ = self.stop_tx.send(Stop::Graceful {
                        deadline: Instant::now() + grace,
                    });
                }
                self.pod = *pod;
            }
            Some(Input::Gone) | Some(Input::Shutdown) | None => {
                self.abandon = true;
                let _ = self.stop_tx.send(Stop::Kill);
            }
        }
    }

    /// A pod with nothing to run: wait for its deletion and finalize it.
    async fn idle_until_deleted(&mut self, inputs: &mut mpsc::UnboundedReceiver<Input>) {
        while !self.deleting && !self.abandon {
            let input = inputs.recv().await;
            self.input(input);
        }
        self.finish().await;
    }

    /// Get a token for the pod's service account and write its kubeconfig; retries until the
    /// account exists. `None` if the pod went away meanwhile.
    async fn identity(
        &mut self,
        inputs: &mut mpsc::UnboundedReceiver<Input>,
    ) -> Option<std::path::PathBuf> {
        let dir = pod_dir(&self.node, &self.ns, &self.name);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot create the pod directory");
        }
        let sa = env::service_account(&self.pod);
        let mut delay = Duration::from_millis(200);
        loop {
            let result = match identity::request_token(&self.node.client, &self.pod, &sa).await {
                Ok(token) => {
                    identity::write_kubeconfig(&self.node.endpoint, &dir, &self.ns, &sa, &token)
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(path) => return Some(path),
                Err(e) => tracing::info!(pod = %self.name, error = %e, "no identity yet; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                input = inputs.recv() => self.input(input),
            }
            if self.deleting || self.abandon {
                return None;
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Start the next init container, or all containers once init is done.
    fn start_next(&mut self, kubeconfig: &std::path::Path, dir: &std::path::Path) {
        if self.deleting || self.abandon {
            return;
        }
        let spec = self.pod.spec.clone().unwrap_or_default();
        let inits = spec.init_containers.unwrap_or_default();
        if self.next_init < inits.len() {
            let policy = match self.policy {
                RestartPolicy::Never => RestartPolicy::Never,
                _ => RestartPolicy::OnFailure,
            };
            let c = inits[self.next_init].clone();
            self.spawn(c, true, self.next_init, policy, kubeconfig, dir);
            self.next_init += 1;
            return;
        }
        self.init = Init::Done;
        for (i, c) in spec.containers.into_iter().enumerate() {
            self.spawn(c, false, i, self.policy, kubeconfig, dir);
        }
    }

    fn spawn(
        &mut self,
        container: k8s_openapi::api::core::v1::Container,
        init: bool,
        index: usize,
        policy: RestartPolicy,
        kubeconfig: &std::path::Path,
        dir: &std::path::Path,
    ) {
        let job = Job {
            node: self.node.clone(),
            pod: self.pod.clone(),
            container,
            init,
            index,
            policy,
            pod_dir: dir.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            reports: self.reports_tx.clone(),
            stop: self.stop_tx.subscribe(),
        };
        self.active += 1;
        tokio::spawn(job.run());
    }

    fn apply(&mut self, report: Report, kubeconfig: &std::path::Path, dir: &std::path::Path) {
        let records = if report.init {
            &mut self.init_records
        } else {
            &mut self.records
        };
        if let Some(slot) = records.get_mut(report.index) {
            *slot = report.record.clone();
        }
        self.dirty = true;
        if !report.done {
            return;
        }
        self.active = self.active.saturating_sub(1);
        if report.init {
            let ok =
                matches!(&report.record.state, status::State::Terminated(t) if t.exit_code == 0);
            if ok {
                self.start_next(kubeconfig, dir);
            } else if !self.deleting && !self.abandon {
                self.init = Init::Failed;
            }
        }
    }

    fn view(&self) -> PodView<'_> {
        PodView {
            phase: self.phase(),
            init: self.init,
            init_containers: &self.init_records,
            containers: &self.records,
            start_time: self.start_time,
            qos_class: self.qos_class,
            reason: None,
            message: None,
        }
    }

    /// Write the status if it changed since the last successful write.
    async fn write_status(&mut self) {
        let status = status::pod_status(&self.view(), &self.conditions, Timestamp::now());
        if self.written.as_ref() == Some(&status) {
            self.dirty = false;
            return;
        }
        let patch = serde_json::json!({
            "metadata": { "uid": self.uid },
            "status": status,
        });
        match self
            .api()
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.conditions = status.conditions.clone().unwrap_or_default();
                self.written = Some(status);
                self.dirty = false;
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                tracing::debug!(pod = %self.name, error = %e, "pod gone; status not written");
                self.dirty = false;
            }
            Err(kube::Error::Api(e)) if e.code == 422 => {
                tracing::warn!(pod = %self.name, error = %e, "status rejected as invalid");
                self.dirty = false;
            }
            Err(e) => {
                tracing::warn!(pod = %self.name, error = %e, "writing status failed; will retry");
                self.dirty = true;
            }
        }
    }

    /// After the containers are gone: a deleted pod gets its final status and is removed from the
    /// API (grace 0), as a kubelet does; an abandoned one is left alone.
    async fn finish(&mut self) {
        if self.abandon || !self.deleting {
            return;
        }
        if self.written.is_some() {
            self.write_status().await;
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        for attempt in 0..10 {
            match self.api().delete(&self.name, &dp).await {
                Ok(_) => {
                    tracing::info!(pod = %self.name, "finalized");
                    return;
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
                Err(e) => {
                    tracing::warn!(pod = %self.name, attempt, error = %e, "finalizing failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}
