//! Bad input against the real API and a running operator: every invalid QWorker or ScalerConfig is either
//! refused by the CRD schema or reported as a condition; the operator never crashes and keeps serving the
//! valid QWorker beside them. A table of known cases, then generated ones (a seeded generator, so a failure
//! names the seed and the case reproduces).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::Api;
use qscaler_crds::conditions;
use qscaler_crds::validation::validate_qworker;
use qscaler_crds::QWorker;
use qscaler_tests::operator::Operator;
use qscaler_tests::{wait_for, Cluster};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

fn valid_qworker(name: &str) -> Value {
    json!({
        "apiVersion": "quickube.com/v1alpha1", "kind": "QWorker",
        "metadata": {"name": name},
        "spec": {
            "podSpec": {"containers": [{"name": "worker", "image": "busybox", "command": ["sleep", "3600"]}]},
            "scaleConfig": {"scalerConfigRef": "redis", "queue": format!("bad-input-{name}"),
                "minReplicas": 1, "maxReplicas": 2, "scalingFactor": 1}
        }
    })
}

/// Sets `value` at a `/`-separated path, creating objects on the way.
fn set(doc: &mut Value, path: &str, value: Value) {
    let mut at = doc;
    let parts: Vec<&str> = path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        if let Ok(index) = part.parse::<usize>() {
            if last {
                at[index] = value;
                return;
            }
            at = &mut at[index];
        } else {
            if !at.is_object() {
                *at = json!({});
            }
            if last {
                at[*part] = value;
                return;
            }
            at = at
                .as_object_mut()
                .expect("an object")
                .entry(part.to_string())
                .or_insert(json!({}));
        }
    }
}

/// What happened to one bad object.
#[derive(Debug, PartialEq)]
enum Outcome {
    RefusedBySchema,
    ReportedInvalid,
    Valid,
}

struct Fixture {
    cluster: Cluster,
    ns: String,
    operator: Operator,
}

impl Fixture {
    async fn new() -> Fixture {
        let cluster = Cluster::connect().await;
        cluster.install_crds().await;
        let ns = cluster.namespace("bad-input").await;
        let port = cluster
            .redis_url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap_or("6379")
            .to_string();
        let sc = json!({
            "apiVersion": "quickube.com/v1alpha1", "kind": "ScalerConfig",
            "metadata": {"name": "redis"},
            "spec": {"type": "redis", "config": {"host": "127.0.0.1", "port": port}}
        });
        let api: Api<qscaler_crds::ScalerConfig> = Api::namespaced(cluster.client.clone(), &ns);
        api.create(
            &PostParams::default(),
            &serde_json::from_value(sc).expect("ScalerConfig"),
        )
        .await
        .expect("creating the ScalerConfig");
        let operator = Operator::start(&cluster, &ns, &[]).await;
        Fixture {
            cluster,
            ns,
            operator,
        }
    }

    fn qworkers(&self) -> Api<QWorker> {
        Api::namespaced(self.cluster.client.clone(), &self.ns)
    }

    /// Creates a QWorker from raw JSON (bypassing the Rust types, as kubectl would) and says what became of it.
    async fn apply(&self, doc: &Value) -> Outcome {
        let name = doc["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_string();
        let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
            self.cluster.client.clone(),
            &self.ns,
            &kube::api::ApiResource::erase::<QWorker>(&()),
        );
        let obj: kube::api::DynamicObject =
            serde_json::from_value(doc.clone()).expect("a dynamic object");
        match raw.create(&PostParams::default(), &obj).await {
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => {
                return Outcome::RefusedBySchema
            }
            Err(e) => panic!("creating {name}: unexpected error {e}"),
            Ok(_) => {}
        }
        // The operator must look at it and say whether the spec is valid.
        let api = self.qworkers();
        let status = wait_for(
            &format!("the operator to report SpecValid on {name}"),
            T,
            || {
                let (api, name) = (api.clone(), name.clone());
                async move {
                    let raw = api.get_opt(&name).await.ok()??;
                    let cond = raw
                        .status?
                        .conditions
                        .into_iter()
                        .find(|c| c.type_ == conditions::SPEC_VALID)?;
                    Some(cond)
                }
            },
        )
        .await;
        if status.status == "True" {
            Outcome::Valid
        } else {
            assert_eq!(
                status.reason,
                conditions::reason::INVALID_SPEC,
                "{name}: {status:?}"
            );
            assert!(
                !status.message.is_empty(),
                "{name}: an invalid spec needs a message"
            );
            Outcome::ReportedInvalid
        }
    }

    /// The valid QWorker beside the bad ones still has its pod, and the operator still runs.
    async fn assert_still_serving(&mut self) {
        let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.ns);
        let lp =
            ListParams::default().labels(&format!("{}=good", qscaler_crds::names::LABEL_QWORKER));
        wait_for("the valid QWorker's pod", T, || {
            let (pods, lp) = (pods.clone(), lp.clone());
            async move { (!pods.list(&lp).await.ok()?.items.is_empty()).then_some(()) }
        })
        .await;
        assert!(
            self.operator.pid().is_some(),
            "the operator exited:\n{}",
            self.operator.log()
        );
        assert!(
            !self.operator.log().contains("panicked"),
            "the operator panicked:\n{}",
            self.operator.log()
        );
    }
}

#[tokio::test]
async fn table_of_invalid_qworkers_is_refused_or_reported() {
    let mut f = Fixture::new().await;
    assert_eq!(f.apply(&valid_qworker("good")).await, Outcome::Valid);
    f.assert_still_serving().await;

    use Outcome::*;
    let cases: Vec<(&str, &str, Value, Outcome)> = vec![
        (
            "no-containers",
            "spec/podSpec/containers",
            json!([]),
            RefusedBySchema,
        ),
        (
            "pod-spec-string",
            "spec/podSpec",
            json!("a pod"),
            RefusedBySchema,
        ),
        (
            "zero-factor",
            "spec/scaleConfig/scalingFactor",
            json!(0),
            RefusedBySchema,
        ),
        (
            "negative-max",
            "spec/scaleConfig/maxReplicas",
            json!(-1),
            RefusedBySchema,
        ),
        (
            "empty-queue",
            "spec/scaleConfig/queue",
            json!(""),
            RefusedBySchema,
        ),
        (
            "no-scale-config",
            "spec/scaleConfig",
            Value::Null,
            RefusedBySchema,
        ),
        (
            "min-above-max",
            "spec/scaleConfig/minReplicas",
            json!(5),
            ReportedInvalid,
        ),
        (
            "restart-always",
            "spec/podSpec/restartPolicy",
            json!("Always"),
            ReportedInvalid,
        ),
        // A blank image, not an empty one: this 1.20 apiserver turns "" into null, which the schema refuses.
        (
            "no-image",
            "spec/podSpec/containers/0/image",
            json!(" "),
            ReportedInvalid,
        ),
        (
            "bad-surge",
            "spec/rollout/maxSurge",
            json!("lots"),
            ReportedInvalid,
        ),
        (
            "gpu-bounds",
            "spec/vpa/minAllowed/gpu",
            json!("1"),
            ReportedInvalid,
        ),
        (
            "restart-policy-number",
            "spec/podSpec/restartPolicy",
            json!(5),
            ReportedInvalid,
        ),
        (
            "containers-not-objects",
            "spec/podSpec/containers/0/ports",
            json!("eighty"),
            ReportedInvalid,
        ),
    ];
    for (name, path, value, expected) in cases {
        let mut doc = valid_qworker(name);
        if value.is_null() {
            doc["spec"]
                .as_object_mut()
                .expect("spec")
                .remove("scaleConfig");
        } else {
            set(&mut doc, path, value.clone());
        }
        let outcome = f.apply(&doc).await;
        assert_eq!(outcome, expected, "{name}: {path} = {value}");
    }
    // Duplicate container names.
    let mut doc = valid_qworker("duplicate-names");
    doc["spec"]["podSpec"]["containers"] =
        json!([{"name": "w", "image": "busybox"}, {"name": "w", "image": "busybox"}]);
    assert_eq!(f.apply(&doc).await, ReportedInvalid);
    // Invalid QWorkers get no pods.
    let pods: Api<Pod> = Api::namespaced(f.cluster.client.clone(), &f.ns);
    for p in pods
        .list(&ListParams::default())
        .await
        .expect("listing pods")
        .items
    {
        let owner = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(qscaler_crds::names::LABEL_QWORKER))
            .cloned();
        assert_eq!(
            owner.as_deref(),
            Some("good"),
            "a pod for an invalid QWorker: {:?}",
            p.metadata.name
        );
    }
    f.assert_still_serving().await;
}

/// A small deterministic generator (xorshift), so each generated case is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

#[tokio::test]
async fn generated_qworkers_are_refused_or_judged_like_the_validator() {
    let mut f = Fixture::new().await;
    assert_eq!(f.apply(&valid_qworker("good")).await, Outcome::Valid);
    let paths = [
        "spec/podSpec/containers/0/name",
        "spec/podSpec/containers/0/image",
        "spec/podSpec/containers/0/args",
        "spec/podSpec/restartPolicy",
        "spec/podSpec/terminationGracePeriodSeconds",
        "spec/scaleConfig/minReplicas",
        "spec/scaleConfig/maxReplicas",
        "spec/scaleConfig/scalingFactor",
        "spec/scaleConfig/queue",
        "spec/scaleConfig/scalerConfigRef",
        "spec/scaleConfig/activateVPA",
        "spec/scaleConfig/scaleDownStabilizationSeconds",
        "spec/rollout/maxSurge",
        "spec/rollout/maxUnavailable",
        "spec/revisionHistoryLimit",
        "spec/vpa/marginPercent",
        "spec/podMetadata/labels",
    ];
    let values = [
        json!(-1),
        json!(0),
        json!(1),
        json!(3),
        json!(0.5),
        json!(1e12),
        json!(""),
        json!("x"),
        json!("25%"),
        json!(true),
        json!([]),
        json!({}),
        json!(["a"]),
        json!({"k": 1}),
        json!("Always"),
        json!("OnFailure"),
    ];
    let seed = std::env::var("QSCALER_BAD_INPUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let mut rng = Rng(seed);
    let mut seen = (0, 0, 0);
    for i in 0..30 {
        let mut doc = valid_qworker(&format!("gen-{i}"));
        let mutations = 1 + rng.next() % 3;
        let mut applied = Vec::new();
        for _ in 0..mutations {
            let (path, value) = (*rng.pick(&paths), rng.pick(&values).clone());
            set(&mut doc, path, value.clone());
            applied.push(format!("{path}={value}"));
        }
        let what = format!("case {i} (seed {seed}): {}", applied.join(", "));
        println!("{what}");
        let outcome = f.apply(&doc).await;
        match outcome {
            Outcome::RefusedBySchema => seen.0 += 1,
            judged => {
                // Accepted: the operator's verdict agrees with the validator on the stored object
                // (an object that does not even parse into the types must be judged invalid).
                let stored = f.qworkers().get(&format!("gen-{i}")).await;
                let problems = match &stored {
                    Ok(qw) => validate_qworker(&qw.spec).len(),
                    Err(_) => 1,
                };
                let expected = if problems == 0 {
                    Outcome::Valid
                } else {
                    Outcome::ReportedInvalid
                };
                assert_eq!(judged, expected, "{what}");
                if judged == Outcome::Valid {
                    seen.2 += 1
                } else {
                    seen.1 += 1
                }
            }
        }
    }
    println!(
        "generated: {} refused by the schema, {} reported invalid, {} valid",
        seen.0, seen.1, seen.2
    );
    f.assert_still_serving().await;
}
