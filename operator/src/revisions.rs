//! Revision history as ControllerRevisions (as StatefulSets and DaemonSets keep it), the contract
//! `kubectl qworker rollout history|undo` reads:
//!
//! - name [`names::revision_name`]`(qworker, short hash)`, in the QWorker's namespace;
//! - labels `quickube.com/qworker=<name>`, `quickube.com/pod-spec-hash=<short>`; annotation
//!   `quickube.com/pod-spec-hash=<full>`; a controller owner reference to the QWorker;
//! - `data` = [`hash::template_value`] (`{"podSpec":..,"podMetadata":..}`), `revision` = 1 + the
//!   highest existing; going back to a recorded template (undo) bumps that revision to the top;
//! - the oldest beyond `revisionHistoryLimit` (default 10) old revisions are pruned, never the current.
//!
//! A revision is created with its bytes in the form the API server's Go code re-encodes them
//! ([`qscaler_crds::gojson`]): the API server keeps `data` as the bytes it was sent and compares
//! them after any later patch, so a `>` or `&` written plainly would make every patch of the
//! revision (the garbage collector's owner-reference removal, the renumbering of an undo) fail with
//! `data: field is immutable`. A revision recorded before this (plain bytes) that cannot be
//! renumbered is replaced by a fresh one with the new number.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use qscaler_crds::gojson::{self, GoStyle};
use qscaler_crds::hash::{self, PodSpecHash};
use qscaler_crds::names;
use qscaler_crds::ownership::controlled_by;
use qscaler_crds::QWorker;

use crate::pods::owner_reference;

/// Default number of old revisions kept.
pub const DEFAULT_HISTORY_LIMIT: i32 = 10;

/// A recorded revision as planning sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Existing {
    pub name: String,
    pub revision: i64,
    pub full_hash: String,
}

/// What to change in the history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevisionPlan {
    /// Create the current revision with this number.
    pub create: Option<i64>,
    /// Renumber an existing revision (the current one, after an undo).
    pub bump: Option<(String, i64)>,
    pub delete: Vec<String>,
}

/// The history changes for `current` (full hash) with `limit` old revisions kept.
pub fn plan(existing: &[Existing], current: &str, limit: i32) -> RevisionPlan {
    let mut out = RevisionPlan::default();
    let top = existing.iter().map(|e| e.revision).max().unwrap_or(0);
    match existing.iter().find(|e| e.full_hash == current) {
        None => out.create = Some(top + 1),
        Some(e)
            if existing
                .iter()
                .any(|o| o.revision >= e.revision && o.name != e.name) =>
        {
            out.bump = Some((e.name.clone(), top + 1))
        }
        Some(_) => {}
    }
    let mut old: Vec<&Existing> = existing.iter().filter(|e| e.full_hash != current).collect();
    old.sort_by_key(|e| (e.revision, e.name.clone()));
    let excess = old.len().saturating_sub(limit.max(0) as usize);
    out.delete = old[..excess].iter().map(|e| e.name.clone()).collect();
    out
}

fn existing(rev: &ControllerRevision) -> Existing {
    Existing {
        name: rev.metadata.name.clone().unwrap_or_default(),
        revision: rev.revision.unwrap_or(0),
        full_hash: rev
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(names::ANNOTATION_REVISION_HASH))
            .cloned()
            .unwrap_or_default(),
    }
}

/// The ControllerRevision recording `qw`'s current template.
pub fn build(qw: &QWorker, hash: &PodSpecHash, revision: i64) -> ControllerRevision {
    let name = qw.metadata.name.clone().unwrap_or_default();
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(names::revision_name(&name, hash.short())),
            namespace: qw.metadata.namespace.clone(),
            labels: Some(
                [
                    (names::LABEL_QWORKER.to_string(), name),
                    (
                        names::LABEL_POD_SPEC_HASH.to_string(),
                        hash.short().to_string(),
                    ),
                    (
                        names::LABEL_MANAGED_BY.to_string(),
                        names::MANAGED_BY_VALUE.to_string(),
                    ),
                ]
                .into(),
            ),
            annotations: Some(
                [(
                    names::ANNOTATION_REVISION_HASH.to_string(),
                    hash.full().to_string(),
                )]
                .into(),
            ),
            owner_references: Some(vec![owner_reference(qw)]),
            ..Default::default()
        },
        data: RawExtension(hash::template_value(&qw.spec)),
        revision: Some(revision),
    }
}

/// The request body that creates `rev`: the whole object in Go's encoding (see the module doc).
pub fn create_body(rev: &ControllerRevision, style: GoStyle) -> serde_json::Result<Vec<u8>> {
    Ok(gojson::to_string(&serde_json::to_value(rev)?, style).into_bytes())
}

/// Creates `rev` with the body of [`create_body`] (kube's `Api::create` would write `>` plainly).
async fn create(
    client: &Client,
    ns: &str,
    rev: &ControllerRevision,
    style: GoStyle,
) -> kube::Result<ControllerRevision> {
    let body = create_body(rev, style).map_err(kube::Error::SerdeError)?;
    let request = kube::core::Request::new(ControllerRevision::url_path(&(), Some(ns)))
        .create(&PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)?;
    client.request(request).await
}

/// Which Go writes the API server's JSON (its `/version`); modern when it cannot be read.
async fn go_style(client: &Client) -> GoStyle {
    match client.apiserver_version().await {
        Ok(info) => GoStyle::from_go_version(&info.go_version),
        Err(e) => {
            tracing::debug!(error = %e, "API server version unknown; assuming Go 1.22 or later");
            GoStyle::Modern
        }
    }
}

/// Brings the history of `qw` in line with its current template. Returns the revision number of the
/// current template when it was created or bumped (for an Event).
pub async fn sync(client: &Client, qw: &QWorker, hash: &PodSpecHash) -> kube::Result<Option<i64>> {
    let ns = qw.metadata.namespace.clone().unwrap_or_default();
    let name = qw.metadata.name.clone().unwrap_or_default();
    let uid = qw.metadata.uid.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let list = api
        .list(&ListParams::default().labels(&format!("{}={name}", names::LABEL_QWORKER)))
        .await?;
    let mine: Vec<Existing> = list
        .items
        .iter()
        .filter(|r| controlled_by(&r.metadata, &uid))
        .map(existing)
        .collect();
    let limit = qw
        .spec
        .revision_history_limit
        .unwrap_or(DEFAULT_HISTORY_LIMIT);
    let p = plan(&mine, hash.full(), limit);
    let mut changed = None;
    if let Some(revision) = p.create {
        let style = go_style(client).await;
        let rev = build(qw, hash, revision);
        match create(client, &ns, &rev, style).await {
            Ok(_) => changed = Some(revision),
            // A leftover of an earlier QWorker of the same name (not yet garbage-collected): replace.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let rev_name = rev.metadata.name.clone().unwrap_or_default();
                api.delete(&rev_name, &Default::default()).await?;
                create(client, &ns, &rev, style).await?;
                changed = Some(revision);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some((rev_name, revision)) = &p.bump {
        match api
            .patch(
                rev_name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "revision": revision })),
            )
            .await
        {
            Ok(_) => {}
            // Recorded in plain bytes by an earlier operator: the API server refuses any patch of
            // it. The current template is recorded afresh under the new number.
            Err(kube::Error::Api(e)) if e.code == 422 => {
                tracing::info!(revision = %rev_name, error = %e.message, "revision cannot be renumbered; recording it again");
                api.delete(rev_name, &Default::default()).await?;
                create(
                    client,
                    &ns,
                    &build(qw, hash, *revision),
                    go_style(client).await,
                )
                .await?;
            }
            Err(e) => return Err(e),
        }
        changed = Some(*revision);
    }
    for rev_name in &p.delete {
        match api.delete(rev_name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e(name: &str, revision: i64) -> Existing {
        Existing {
            name: name.into(),
            revision,
            full_hash: format!("{name}-full"),
        }
    }

    #[test]
    fn first_revision_is_one() {
        assert_eq!(plan(&[], "a-full", 10).create, Some(1));
    }

    #[test]
    fn new_template_gets_the_next_number() {
        let p = plan(&[e("a", 1), e("b", 2)], "c-full", 10);
        assert_eq!(
            p,
            RevisionPlan {
                create: Some(3),
                ..Default::default()
            }
        );
    }

    #[test]
    fn current_at_the_top_changes_nothing() {
        assert_eq!(
            plan(&[e("a", 1), e("b", 2)], "b-full", 10),
            RevisionPlan::default()
        );
    }

    #[test]
    fn undo_bumps_the_old_revision() {
        let p = plan(&[e("a", 1), e("b", 2)], "a-full", 10);
        assert_eq!(p.bump, Some(("a".into(), 3)));
        assert_eq!(p.create, None);
    }

    #[test]
    fn prunes_oldest_never_current() {
        let existing: Vec<Existing> = (1..=5).map(|i| e(&format!("r{i}"), i)).collect();
        let p = plan(&existing, "r1-full", 2);
        assert_eq!(p.delete, vec!["r2".to_string(), "r3".to_string()]);
        assert_eq!(p.bump, Some(("r1".into(), 6)));
        let p = plan(&existing, "new-full", 0);
        assert_eq!(p.delete.len(), 5);
    }

    #[test]
    fn built_revision_matches_the_contract() {
        let mut qw = QWorker::new(
            "w",
            serde_json::from_value(serde_json::json!({
                "podSpec": {"containers": [{"name": "c", "image": "i"}]},
                "scaleConfig": {"scalerConfigRef": "s", "queue": "q", "maxReplicas": 3}
            }))
            .unwrap(),
        );
        qw.metadata.namespace = Some("ns".into());
        qw.metadata.uid = Some("u".into());
        let h = hash::pod_spec_hash(&qw.spec);
        let rev = build(&qw, &h, 4);
        assert_eq!(
            rev.metadata.name.unwrap(),
            names::revision_name("w", h.short())
        );
        assert_eq!(rev.revision, Some(4));
        assert_eq!(
            rev.metadata.annotations.unwrap()[names::ANNOTATION_REVISION_HASH],
            h.full()
        );
        assert_eq!(
            rev.metadata.labels.unwrap()[names::LABEL_POD_SPEC_HASH],
            h.short()
        );
        assert_eq!(rev.data.0, hash::template_value(&qw.spec));
        assert_eq!(hash::hash_value(&hash::template_value(&qw.spec)), h);
    }

    #[test]
    fn created_bytes_are_what_the_api_server_would_write_again() {
        let mut qw = QWorker::new(
            "w",
            serde_json::from_value(serde_json::json!({
                "podSpec": {"containers": [{"name": "c", "image": "i",
                    "args": ["sh", "-c", "sleep 1 >/dev/null && echo <done>"]}]},
                "scaleConfig": {"scalerConfigRef": "s", "queue": "q", "maxReplicas": 3}
            }))
            .unwrap(),
        );
        qw.metadata.namespace = Some("ns".into());
        qw.metadata.uid = Some("u".into());
        let h = hash::pod_spec_hash(&qw.spec);
        let rev = build(&qw, &h, 1);
        let body = String::from_utf8(create_body(&rev, GoStyle::Before122).unwrap()).unwrap();
        assert!(
            body.contains(r#""sleep 1 \u003e/dev/null \u0026\u0026 echo \u003cdone\u003e""#),
            "{body}"
        );
        assert!(!body.contains('>') && !body.contains('&') && !body.contains('<'));
        // The same object, and the template still hashes to the revision's hash.
        let back: ControllerRevision = serde_json::from_str(&body).unwrap();
        assert_eq!(back, rev);
        assert_eq!(hash::hash_value(&back.data.0), h);
    }

    proptest! {
        #[test]
        fn history_stays_within_limit_and_current_is_top(n in 0usize..15, current in 0usize..20, limit in 0i32..12) {
            let existing: Vec<Existing> = (0..n).map(|i| e(&format!("r{i}"), i as i64 + 1)).collect();
            let cur = format!("r{current}-full");
            let p = plan(&existing, &cur, limit);
            let deletes_current = p.delete.iter().any(|d| format!("{d}-full") == cur);
            prop_assert!(!deletes_current);
            let remaining_old = existing.iter().filter(|x| x.full_hash != cur && !p.delete.contains(&x.name)).count();
            prop_assert!(remaining_old <= limit as usize);
            let top = existing.iter().map(|x| x.revision).max().unwrap_or(0);
            let cur_rev = p.create.or(p.bump.as_ref().map(|b| b.1))
                .or(existing.iter().find(|x| x.full_hash == cur).map(|x| x.revision)).unwrap();
            prop_assert!(cur_rev >= top);
        }
    }
}
