//! Which objects belong to a QWorker: the operator (its pods, its revisions) and the plugin (rollout
//! history) must agree, so the rule is written once.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Whether `meta`'s controller owner reference is the object with `uid`. By uid, not name: a
/// QWorker re-created under the same name does not adopt what its predecessor left behind.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned(uid: &str, controller: Option<bool>) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                uid: uid.into(),
                controller,
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_the_controller_reference_with_that_uid_counts() {
        assert!(controlled_by(&owned("u1", Some(true)), "u1"));
        assert!(!controlled_by(&owned("u2", Some(true)), "u1"));
        assert!(!controlled_by(&owned("u1", Some(false)), "u1"));
        assert!(!controlled_by(&owned("u1", None), "u1"));
        assert!(!controlled_by(&ObjectMeta::default(), "u1"));
    }
}
