//! The canonical pod-spec hash: the identity of a rollout revision.
//!
//! Input: the QWorker's `podSpec` and `podMetadata` as the user wrote them (never the requests that
//! vertical sizing adds, so resizing never starts a rollout). Canonical form: JSON with object keys
//! sorted, nulls dropped and no whitespace, so that neither key order nor formatting nor an explicit
//! `null` changes the hash. Digest: SHA-256, lowercase hex. The full 64 characters go to
//! `status.currentPodSpecHash` and the `POD_SPEC_HASH` env var; the first [`SHORT_LEN`] go to the
//! `quickube.com/pod-spec-hash` label (label values hold at most 63 characters).

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::qworker::QWorkerSpec;

/// Length of the short form used as a label value and in revision names.
pub const SHORT_LEN: usize = 10;

/// A pod-spec hash in its full form; [`PodSpecHash::short`] gives the label form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodSpecHash(String);

impl PodSpecHash {
    pub fn full(&self) -> &str {
        &self.0
    }

    pub fn short(&self) -> &str {
        &self.0[..SHORT_LEN]
    }

    /// Whether a short label value belongs to this hash.
    pub fn matches_short(&self, short: &str) -> bool {
        short.len() == SHORT_LEN && self.0.starts_with(short)
    }
}

impl std::fmt::Display for PodSpecHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The hash of a QWorker's pod template (pod spec and pod metadata).
pub fn pod_spec_hash(spec: &QWorkerSpec) -> PodSpecHash {
    hash_value(&template_value(spec))
}

/// The part of the spec that the hash covers, as JSON. ControllerRevisions store exactly this.
pub fn template_value(spec: &QWorkerSpec) -> Value {
    let mut template = serde_json::Map::new();
    template.insert("podSpec".into(), to_value(&spec.pod_spec));
    if let Some(meta) = spec
        .pod_metadata
        .as_ref()
        .filter(|m| !m.labels.is_empty() || !m.annotations.is_empty())
    {
        template.insert("podMetadata".into(), to_value(meta));
    }
    Value::Object(template)
}

/// The hash of any JSON value in canonical form.
pub fn hash_value(value: &Value) -> PodSpecHash {
    let digest = Sha256::digest(canonical_json(value).as_bytes());
    PodSpecHash(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// JSON with sorted keys, nulls in objects dropped, no insignificant whitespace.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    let serde_string =
        |s: &str, out: &mut String| out.push_str(&Value::String(s.into()).to_string());
    crate::gojson::write_sorted(
        value,
        crate::gojson::Members::DropNull,
        &serde_string,
        &mut out,
    );
    out
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // Serializing plain data types (no maps with non-string keys) cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn spec_from(json: Value) -> QWorkerSpec {
        serde_json::from_value(json).expect("valid spec")
    }

    fn example() -> Value {
        json!({
            "podSpec": {"containers": [{"name": "worker", "image": "w:1",
                "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}]},
            "scaleConfig": {"scalerConfigRef": "sc", "queue": "q", "maxReplicas": 3}
        })
    }

    #[test]
    fn hash_is_sha256_hex_with_a_label_sized_short_form() {
        let h = pod_spec_hash(&spec_from(example()));
        assert_eq!(h.full().len(), 64);
        assert!(h
            .full()
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(h.short(), &h.full()[..SHORT_LEN]);
        assert!(h.matches_short(h.short()));
        assert!(!h.matches_short("0123456789"));
    }

    #[test]
    fn known_value_is_stable_across_releases() {
        // Changing the canonical form would roll out every worker of every user on upgrade.
        let v = json!({"b": [1, {"y": null, "x": "s"}], "a": true});
        assert_eq!(canonical_json(&v), r#"{"a":true,"b":[1,{"x":"s"}]}"#);
        assert_eq!(
            hash_value(&v).full(),
            "d0ccc84ab0a5863b93c3f3fd4096b0b0b55ba92f0f3cedcccc118316e2a27137"
        );
    }

    #[test]
    fn scale_config_and_vpa_do_not_change_the_hash() {
        let a = spec_from(example());
        let mut b = a.clone();
        b.scale_config.max_replicas = 100;
        b.scale_config.activate_vpa = true;
        b.vpa = Some(Default::default());
        assert_eq!(pod_spec_hash(&a), pod_spec_hash(&b));
    }

    #[test]
    fn pod_spec_and_pod_metadata_change_the_hash() {
        let a = spec_from(example());
        let mut b = a.clone();
        b.pod_spec.containers[0].image = Some("w:2".into());
        assert_ne!(pod_spec_hash(&a), pod_spec_hash(&b));
        let mut c = a.clone();
        c.pod_metadata = Some(crate::qworker::PodMetadata {
            annotations: [("quickube.com/restartedAt".to_string(), "now".to_string())].into(),
            ..Default::default()
        });
        assert_ne!(pod_spec_hash(&a), pod_spec_hash(&c));
        // Empty metadata is the same as none.
        let mut d = a.clone();
        d.pod_metadata = Some(Default::default());
        assert_eq!(pod_spec_hash(&a), pod_spec_hash(&d));
    }

    #[test]
    fn yaml_formatting_and_key_order_do_not_change_the_hash() {
        let one: QWorkerSpec = serde_saphyr::from_str(
            "podSpec:\n  containers:\n  - name: w\n    image: i\n    args: [a, b]\nscaleConfig: {queue: q, scalerConfigRef: s, maxReplicas: 1}\n",
        )
        .expect("yaml");
        let two: QWorkerSpec = serde_saphyr::from_str(
            "scaleConfig:\n  maxReplicas: 1\n  scalerConfigRef: s\n  queue: q\npodSpec: {containers: [{args: [\"a\", \"b\"], image: \"i\", name: \"w\"}]}\n",
        )
        .expect("yaml");
        assert_eq!(pod_spec_hash(&one), pod_spec_hash(&two));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z0-9 ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Rebuilds every object with its keys in reverse order.
    fn reorder(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<_> = m.keys().cloned().collect();
                keys.reverse();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), reorder(&m[&k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(reorder).collect()),
            s => s.clone(),
        }
    }

    proptest! {
        #[test]
        fn key_order_never_matters(v in arb_json()) {
            prop_assert_eq!(hash_value(&v), hash_value(&reorder(&v)));
        }

        #[test]
        fn canonical_form_is_valid_json_of_the_same_value(v in arb_json()) {
            let parsed: Value = serde_json::from_str(&canonical_json(&v)).expect("canonical JSON parses");
            prop_assert_eq!(canonical_json(&parsed), canonical_json(&v));
        }

        #[test]
        fn different_images_give_different_hashes(a in "[a-z]{1,12}", b in "[a-z]{1,12}") {
            prop_assume!(a != b);
            let mut x = spec_from(example());
            let mut y = x.clone();
            x.pod_spec.containers[0].image = Some(a);
            y.pod_spec.containers[0].image = Some(b);
            prop_assert_ne!(pod_spec_hash(&x), pod_spec_hash(&y));
        }
    }
}
