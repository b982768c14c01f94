//! The revision history of a QWorker: the ControllerRevisions the operator records, as plain rows,
//! and the pure decisions of `rollout history` and `rollout undo`.

use std::io::Write;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodSpec;
use qscaler_crds::hash::{hash_value, pod_spec_hash, SHORT_LEN};
use qscaler_crds::names::ANNOTATION_REVISION_HASH;
use qscaler_crds::ownership::controlled_by;
use qscaler_crds::qworker::PodMetadata;
use qscaler_crds::QWorker;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::table::Table;

/// The annotation kubectl reads a change cause from.
pub const ANNOTATION_CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// One recorded pod template of a QWorker.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    pub revision: i64,
    /// The ControllerRevision's name.
    pub name: String,
    /// The full pod-spec hash of the template.
    pub hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_cause: Option<String>,
    /// Whether the QWorker's spec has this template now.
    pub current: bool,
    /// `{"podSpec": ..., "podMetadata": ...}`, as recorded.
    pub template: Value,
}

impl Revision {
    pub fn short_hash(&self) -> &str {
        self.hash.get(..SHORT_LEN).unwrap_or(&self.hash)
    }
}

/// The revisions controlled by `qworker`, oldest first. Revisions left over from another object of
/// the same name (another uid) are not part of its history.
pub fn history(qworker: &QWorker, revisions: &[ControllerRevision]) -> Vec<Revision> {
    let current = pod_spec_hash(&qworker.spec);
    let uid = qworker.metadata.uid.as_deref().unwrap_or_default();
    let mut rows: Vec<Revision> = revisions
        .iter()
        .filter(|r| !uid.is_empty() && controlled_by(&r.metadata, uid))
        .map(|r| {
            let template = r.data.0.clone();
            let computed = hash_value(&template);
            let annotations = r.metadata.annotations.as_ref();
            Revision {
                revision: r.revision.unwrap_or(0),
                name: r.metadata.name.clone().unwrap_or_default(),
                hash: annotations
                    .and_then(|a| a.get(ANNOTATION_REVISION_HASH))
                    .cloned()
                    .unwrap_or_else(|| computed.full().to_owned()),
                change_cause: annotations
                    .and_then(|a| a.get(ANNOTATION_CHANGE_CAUSE))
                    .cloned(),
                current: computed == current,
                template,
            }
        })
        .collect();
    rows.sort_by_key(|r| r.revision);
    rows
}

/// What `rollout undo` does.
#[derive(Debug, PartialEq)]
pub enum Undo<'a> {
    /// Put this revision's template back.
    RollBack(&'a Revision),
    /// The spec already has the template of this revision: nothing to do (kubectl says "skipped rollback").
    AlreadyCurrent(i64),
}

/// Picks the revision to roll back to. `to_revision` 0 means the previous one: the newest revision
/// whose template differs from the current spec (the second newest when the newest is current).
pub fn select_undo<'a>(name: &str, history: &'a [Revision], to_revision: i64) -> Result<Undo<'a>> {
    if to_revision == 0 {
        return history
            .iter()
            .rev()
            .find(|r| !r.current)
            .map(Undo::RollBack)
            .ok_or_else(|| Error::NoPreviousRevision {
                name: name.to_owned(),
            });
    }
    match history.iter().find(|r| r.revision == to_revision) {
        None => Err(Error::RevisionNotFound {
            name: name.to_owned(),
            revision: to_revision,
        }),
        Some(r) if r.current => Ok(Undo::AlreadyCurrent(to_revision)),
        Some(r) => Ok(Undo::RollBack(r)),
    }
}

/// The shape a revision's data must have.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Template {
    #[allow(dead_code)]
    pod_spec: PodSpec,
    #[serde(default)]
    #[allow(dead_code)]
    pod_metadata: Option<PodMetadata>,
}

/// The JSON patch that puts `revision`'s template into the QWorker's spec. Whole-field replace,
/// add and remove, so that no field of the current template survives as a merge would let it.
pub fn undo_patch(name: &str, qworker: &QWorker, revision: &Revision) -> Result<Value> {
    let bad = |reason: String| Error::BadRevision {
        name: name.to_owned(),
        revision: revision.revision,
        reason,
    };
    serde_json::from_value::<Template>(revision.template.clone())
        .map_err(|e| bad(format!("its data is not a QWorker pod template: {e}")))?;
    let pod_spec = &revision.template["podSpec"];
    let mut ops = vec![json!({"op": "replace", "path": "/spec/podSpec", "value": pod_spec})];
    match revision
        .template
        .get("podMetadata")
        .filter(|m| !m.is_null())
    {
        Some(meta) => ops.push(json!({"op": "add", "path": "/spec/podMetadata", "value": meta})),
        None if qworker.spec.pod_metadata.is_some() => {
            ops.push(json!({"op": "remove", "path": "/spec/podMetadata"}))
        }
        None => {}
    }
    Ok(Value::Array(ops))
}

/// `rollout history NAME`: REVISION, HASH, CHANGE-CAUSE.
pub fn write_history(
    out: &mut impl Write,
    name: &str,
    history: &[Revision],
) -> std::io::Result<()> {
    writeln!(out, "qworker.quickube.com/{name}")?;
    if history.is_empty() {
        return writeln!(out, "No rollout history found.");
    }
    let mut table = Table::new(&["REVISION", "HASH", "CHANGE-CAUSE"]);
    for r in history {
        table.push(vec![
            r.revision.to_string(),
            r.short_hash().to_owned(),
            r.change_cause.clone().unwrap_or_else(|| "<none>".into()),
        ]);
    }
    table.write(out, true)
}

/// `rollout history NAME --revision N`: the template as YAML.
pub fn write_revision(out: &mut impl Write, name: &str, revision: &Revision) -> Result<()> {
    writeln!(
        out,
        "qworker.quickube.com/{name} with revision #{}",
        revision.revision
    )?;
    let current = if revision.current { " (current)" } else { "" };
    writeln!(out, "Hash: {}{current}", revision.hash)?;
    if let Some(cause) = &revision.change_cause {
        writeln!(out, "Change-Cause: {cause}")?;
    }
    writeln!(out, "Pod Template:")?;
    let yaml =
        serde_saphyr::to_string(&revision.template).map_err(|e| Error::Encode(e.to_string()))?;
    for line in yaml.lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{qworker, revision};

    fn names(h: &[Revision]) -> Vec<(i64, bool)> {
        h.iter().map(|r| (r.revision, r.current)).collect()
    }

    #[test]
    fn history_is_sorted_marks_current_and_ignores_other_owners() {
        let qw = qworker("mail").image("mail:v2").build();
        let v1 = qworker("mail").image("mail:v1").build();
        let mut foreign = revision(&v1, 9);
        foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "someone-else".into();
        let mut not_controller = revision(&v1, 8);
        not_controller.metadata.owner_references.as_mut().unwrap()[0].controller = Some(false);
        let h = history(
            &qw,
            &[revision(&qw, 3), revision(&v1, 1), foreign, not_controller],
        );
        assert_eq!(names(&h), vec![(1, false), (3, true)]);
        assert_eq!(h[1].hash, pod_spec_hash(&qw.spec).full());
        assert_eq!(h[1].short_hash(), pod_spec_hash(&qw.spec).short());
    }

    #[test]
    fn a_revision_without_hash_annotation_gets_the_computed_hash() {
        let qw = qworker("mail").build();
        let mut r = revision(&qw, 1);
        r.metadata.annotations = None;
        let h = history(&qw, &[r]);
        assert_eq!(h[0].hash, pod_spec_hash(&qw.spec).full());
        assert!(h[0].current);
    }

    #[test]
    fn undo_defaults_to_the_newest_revision_that_is_not_current() {
        let v = |i: i64| qworker("mail").image(&format!("mail:v{i}")).build();
        let current = v(3);
        let revs = [revision(&v(1), 1), revision(&v(2), 2), revision(&v(3), 3)];
        let h = history(&current, &revs);
        assert_eq!(select_undo("mail", &h, 0).unwrap(), Undo::RollBack(&h[1]));
        // The spec changed and no revision was recorded yet: the newest recorded one is the previous.
        let h = history(&v(4), &revs);
        assert_eq!(select_undo("mail", &h, 0).unwrap(), Undo::RollBack(&h[2]));
        // After an undo to 1 the operator bumps 1 to 4: the previous is then 3.
        let mut bumped = revision(&v(1), 4);
        bumped.metadata.name = Some("mail-bumped".into());
        let h = history(&v(1), &[revision(&v(2), 2), revision(&v(3), 3), bumped]);
        assert_eq!(select_undo("mail", &h, 0).unwrap(), Undo::RollBack(&h[1]));
    }

    #[test]
    fn undo_to_a_given_revision() {
        let v = |i: i64| qworker("mail").image(&format!("mail:v{i}")).build();
        let revs = [revision(&v(1), 1), revision(&v(2), 2)];
        let h = history(&v(2), &revs);
        assert_eq!(select_undo("mail", &h, 1).unwrap(), Undo::RollBack(&h[0]));
        assert_eq!(select_undo("mail", &h, 2).unwrap(), Undo::AlreadyCurrent(2));
        let err = select_undo("mail", &h, 7).unwrap_err();
        assert_eq!(
            err.to_string(),
            "qworker \"mail\" has no revision 7 in its history (see `kubectl qworker rollout history mail`)"
        );
        assert!(matches!(
            select_undo("mail", &h, -1),
            Err(Error::RevisionNotFound { .. })
        ));
    }

    #[test]
    fn undo_with_nothing_to_go_back_to() {
        let qw = qworker("mail").build();
        assert!(matches!(
            select_undo("mail", &history(&qw, &[]), 0),
            Err(Error::NoPreviousRevision { .. })
        ));
        let h = history(&qw, &[revision(&qw, 1)]);
        assert!(matches!(
            select_undo("mail", &h, 0),
            Err(Error::NoPreviousRevision { .. })
        ));
    }

    #[test]
    fn the_undo_patch_replaces_spec_and_metadata_as_wholes() {
        let old = qworker("mail")
            .image("mail:v1")
            .annotation("a", "1")
            .build();
        let current = qworker("mail")
            .image("mail:v2")
            .annotation("b", "2")
            .build();
        let h = history(&current, &[revision(&old, 1)]);
        let patch = undo_patch("mail", &current, &h[0]).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "replace", "path": "/spec/podSpec", "value": qscaler_crds::hash::template_value(&old.spec)["podSpec"]},
                {"op": "add", "path": "/spec/podMetadata", "value": {"annotations": {"a": "1"}}},
            ])
        );
        // The old template had no pod metadata: the current metadata goes.
        let bare = qworker("mail").image("mail:v1").build();
        let h = history(&current, &[revision(&bare, 1)]);
        let patch = undo_patch("mail", &current, &h[0]).unwrap();
        assert_eq!(
            patch[1],
            json!({"op": "remove", "path": "/spec/podMetadata"})
        );
        // Neither has any: only the pod spec is replaced.
        let h = history(&bare, &[revision(&old, 1)]);
        let both_bare = undo_patch(
            "mail",
            &bare,
            &Revision {
                template: h[0].template.clone(),
                ..h[0].clone()
            },
        );
        assert_eq!(both_bare.unwrap().as_array().map(Vec::len), Some(2));
        let h2 = history(&old, &[revision(&bare, 1)]);
        let p = undo_patch("mail", &qworker("mail").build(), &h2[0]).unwrap();
        assert_eq!(p.as_array().map(Vec::len), Some(1));
    }

    /// The operator writes a revision's data in the bytes the API server re-encodes (`>` as
    /// `\u003e`, keys sorted): read back, it is the same template, current, and undoes to it.
    #[test]
    fn a_revision_stored_in_the_api_servers_form_reads_as_the_same_template() {
        use qscaler_crds::gojson::{self, GoStyle};
        let old = qworker("mail")
            .annotation("cmd", "sleep 1 >/dev/null && echo <ok>")
            .build();
        let stored = gojson::to_string(
            &serde_json::to_value(revision(&old, 1)).unwrap(),
            GoStyle::Before122,
        );
        assert!(
            stored.contains("\\u003e") && !stored.contains('>'),
            "{stored}"
        );
        let read: ControllerRevision = serde_json::from_str(&stored).unwrap();
        let h = history(&old, std::slice::from_ref(&read));
        assert!(h[0].current);
        assert_eq!(h[0].hash, pod_spec_hash(&old.spec).full());
        let current = qworker("mail").build();
        let h = history(&current, &[read]);
        let patch = undo_patch("mail", &current, &h[0]).unwrap();
        assert_eq!(
            patch[1]["value"]["annotations"]["cmd"],
            "sleep 1 >/dev/null && echo <ok>"
        );
    }

    #[test]
    fn a_malformed_revision_is_refused() {
        let qw = qworker("mail").build();
        let mut r = revision(&qw, 1);
        r.data = k8s_openapi::apimachinery::pkg::runtime::RawExtension(json!({"podSpec": "nope"}));
        let h = history(&qworker("mail").image("other").build(), &[r]);
        let err = undo_patch("mail", &qw, &h[0]).unwrap_err();
        assert!(err.to_string().starts_with("revision 1 of qworker \"mail\" cannot be read: its data is not a QWorker pod template"), "{err}");
    }
}
