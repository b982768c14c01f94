//! Attaching a test to the running local cluster.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::wait::wait_for;

/// What to do when the cluster is not there.
pub const CLUSTER_HINT: &str = "run tests/cluster.sh up and eval \"$(tests/cluster.sh env)\"";

/// The running local cluster: an admin client, its kubeconfig, Redis, and the state directory
/// (pod logs are under `<state_dir>/pods/<namespace>_<pod>/<container>.log`).
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    pub kubeconfig: PathBuf,
    pub redis_url: String,
    pub state_dir: PathBuf,
}

/// Set (to anything but `0`) where a missing cluster must fail the suite instead of skipping it:
/// `tests/run.sh`, and so CI, sets it.
pub const REQUIRE_CLUSTER_ENV: &str = "QSCALER_REQUIRE_CLUSTER";

/// Ends this test binary with success and a message on the terminal when no local cluster is
/// attached (`QSCALER_CLUSTER_DIR` unset), unless [`REQUIRE_CLUSTER_ENV`] says one must be: a plain
/// `cargo test --workspace` then runs the unit suites and says which cluster suites it skipped.
pub fn skip_suite_without_cluster() {
    if std::env::var_os("QSCALER_CLUSTER_DIR").is_some_and(|v| !v.is_empty()) {
        return;
    }
    let required = std::env::var(REQUIRE_CLUSTER_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    if required {
        panic!("QSCALER_CLUSTER_DIR is not set but {REQUIRE_CLUSTER_ENV} is: {CLUSTER_HINT}");
    }
    let suite = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| {
            stem.rsplit_once('-')
                .map_or(stem.clone(), |(name, _hash)| name.to_string())
        })
        .unwrap_or_else(|| "this suite".into());
    // Once per binary (tests run on several threads); the others wait here until the exit.
    static SKIP: std::sync::Once = std::sync::Once::new();
    SKIP.call_once(|| {
        // Straight to the terminal: the test harness captures `eprintln!` of passing tests.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPED {suite}: it needs the local cluster and none is attached (QSCALER_CLUSTER_DIR \
             is unset); {CLUSTER_HINT}, or run tests/run.sh. Set {REQUIRE_CLUSTER_ENV}=1 to make \
             this an error."
        );
        std::process::exit(0);
    });
}

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: the local cluster is not up; {CLUSTER_HINT}"),
    }
}

/// A workspace binary, from the profile directory this test was built into (`<target>/debug/deps/<test>`
/// → `<target>/debug/<name>`), so `CARGO_TARGET_DIR` and profiles are honoured.
pub fn workspace_bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The directory holding the workspace's binaries of the current build.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let from_exe = exe.as_deref().and_then(Path::parent).and_then(|dir| {
        if dir.file_name()? == "deps" {
            dir.parent().map(Path::to_path_buf)
        } else {
            Some(dir.to_path_buf())
        }
    });
    from_exe.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target"));
        workspace_root().join(target).join("debug")
    })
}

/// The Cargo workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

static NAMESPACES: AtomicU32 = AtomicU32::new(0);

impl Cluster {
    /// Attach to the cluster named by KUBECONFIG, REDIS_URL and QSCALER_CLUSTER_DIR; panics
    /// with a hint when they are missing or the apiserver does not answer.
    pub async fn connect() -> Cluster {
        skip_suite_without_cluster();
        let kubeconfig = PathBuf::from(required_env("KUBECONFIG"));
        let redis_url = required_env("REDIS_URL");
        let state_dir = PathBuf::from(required_env("QSCALER_CLUSTER_DIR"));
        Cluster::attach(kubeconfig, redis_url, state_dir, CLUSTER_HINT).await
    }

    /// Attach to a cluster given its kubeconfig, Redis URL and state directory; `hint` says how
    /// to bring it up when it does not answer.
    pub async fn attach(
        kubeconfig: PathBuf,
        redis_url: String,
        state_dir: PathBuf,
        hint: &str,
    ) -> Cluster {
        let kc = Kubeconfig::read_from(&kubeconfig).unwrap_or_else(|e| {
            panic!(
                "cannot read kubeconfig {}: {e}; {hint}",
                kubeconfig.display()
            )
        });
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("bad kubeconfig {}: {e}", kubeconfig.display()));
        let client = Client::try_from(config).unwrap_or_else(|e| panic!("kube client: {e}"));
        if let Err(e) = client.apiserver_version().await {
            panic!(
                "the apiserver of {} does not answer ({e}); {hint}",
                kubeconfig.display()
            );
        }
        Cluster {
            client,
            kubeconfig,
            redis_url,
            state_dir,
        }
    }

    /// Install the project's CRDs (server-side apply of `crds/*.yaml`) and wait until they are
    /// Established. Idempotent and safe from parallel tests.
    pub async fn install_crds(&self) {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let dir = workspace_root().join("crds");
        let mut names = Vec::new();
        for file in ["qworker.yaml", "scalerconfig.yaml"] {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let crd: serde_json::Value = serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            let name = crd["metadata"]["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{} has no metadata.name", path.display()))
                .to_string();
            let pp = PatchParams::apply("qscaler-tests").force();
            // Parallel appliers can conflict on the object's resourceVersion: retry.
            let mut attempt = 0;
            loop {
                match api.patch(&name, &pp, &Patch::Apply(&crd)).await {
                    Ok(_) => break,
                    Err(e) if attempt < 10 => {
                        attempt += 1;
                        tracing::debug!(error = %e, "applying CRD {name}; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("applying CRD {name}: {e}"),
                }
            }
            names.push(name);
        }
        for name in names {
            wait_for(
                &format!("CRD {name} Established"),
                Duration::from_secs(30),
                || {
                    let api = api.clone();
                    let name = name.clone();
                    async move {
                        let crd = api.get(&name).await.ok()?;
                        crd.status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                            .then_some(())
                    }
                },
            )
            .await;
        }
    }

    /// A fresh namespace `<prefix>-<unique>`, returned once pods can be created in it: its
    /// default ServiceAccount exists and (on 1.20) has its token secret, which admission requires.
    pub async fn namespace(&self, prefix: &str) -> String {
        let n = NAMESPACES.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let suffix = format!("{:x}{:x}{n}", std::process::id() % 4096, nanos % 65536);
        let prefix: String = prefix
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let name = format!("{}-{suffix}", prefix.trim_matches('-'));
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"qscaler-test": "true"}}
        }))
        .expect("a valid Namespace");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &name);
        wait_for(
            &format!("the default ServiceAccount of {name}"),
            Duration::from_secs(60),
            || {
                let sas = sas.clone();
                async move { sas.get_opt("default").await.ok().flatten().map(|_| ()) }
            },
        )
        .await;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &name);
        let probe: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "qscaler-admission-probe"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .expect("a valid Pod");
        let dry_run = PostParams {
            dry_run: true,
            ..Default::default()
        };
        wait_for(
            &format!("pod admission in {name} (service-account token)"),
            Duration::from_secs(60),
            || {
                let (pods, probe, dry_run) = (&pods, &probe, &dry_run);
                async move { pods.create(dry_run, probe).await.ok().map(|_| ()) }
            },
        )
        .await;
        name
    }

    /// Delete a namespace (its pods get SIGTERM and their grace period) without waiting; for
    /// tests that leave long-running pods behind on this 2-core machine.
    pub async fn delete_namespace(&self, namespace: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        if let Err(e) = api.delete(namespace, &Default::default()).await {
            panic!("deleting namespace {namespace}: {e}");
        }
    }

    /// Lets the namespace's `default` ServiceAccount use `verbs` on pods (a Role `name` and its
    /// RoleBinding), and returns once RBAC answers yes for each verb: bindings take effect through the
    /// apiserver's caches.
    pub async fn grant_pods(&self, namespace: &str, name: &str, verbs: &[&str]) {
        let role: Role = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": verbs}],
        }))
        .expect("a valid Role");
        Api::<Role>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &role)
            .await
            .unwrap_or_else(|e| panic!("creating Role {name}: {e}"));
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        }))
        .expect("a valid RoleBinding");
        Api::<RoleBinding>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap_or_else(|e| panic!("creating RoleBinding {name}: {e}"));
        let sa = format!("system:serviceaccount:{namespace}:default");
        for verb in verbs {
            wait_for(
                &format!("the RoleBinding {name} to allow {verb} pods"),
                Duration::from_secs(60),
                || {
                    let sa = sa.clone();
                    async move {
                        let out = self
                            .kubectl(&["auth", "can-i", verb, "pods", "-n", namespace, "--as", &sa])
                            .await;
                        (String::from_utf8_lossy(&out.stdout).trim() == "yes").then_some(())
                    }
                },
            )
            .await;
        }
    }

    /// A connection to the cluster's Redis.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.redis_url.as_str())
            .unwrap_or_else(|e| panic!("bad REDIS_URL {}: {e}", self.redis_url));
        client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connecting to Redis at {}: {e}; {CLUSTER_HINT}",
                    self.redis_url
                )
            })
    }

    /// Run the real kubectl against the cluster.
    pub async fn kubectl(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running kubectl: {e}"))
    }

    /// Where the stand-in kubelet keeps a pod's files.
    pub fn pod_dir(&self, namespace: &str, pod: &str) -> PathBuf {
        self.state_dir
            .join("pods")
            .join(format!("{namespace}_{pod}"))
    }

    /// SIGKILLs qsupervisor, PID 1 of a stand-in pod's worker container, from outside: the whole
    /// container dies at once, as on an OOM kill, and nothing cleans up. False when the pod has no
    /// running container process.
    pub fn kill_container(&self, namespace: &str, pod: &str) -> bool {
        let init = || -> Option<i32> {
            let launcher: i32 =
                std::fs::read_to_string(self.pod_dir(namespace, pod).join("worker.pid"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
            let children =
                std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children"))
                    .ok()?;
            children.split_whitespace().next()?.parse().ok()
        };
        init().is_some_and(|pid| {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
        })
    }

    /// A container's output so far (stdout and stderr, all runs); empty if it has none yet.
    pub fn pod_log(&self, namespace: &str, pod: &str, container: &str) -> String {
        std::fs::read_to_string(
            self.pod_dir(namespace, pod)
                .join(format!("{container}.log")),
        )
        .unwrap_or_default()
    }
}
