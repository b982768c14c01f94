//! The operator's pod cache, indexed by namespace and QWorker label: a reconcile reads its own pods
//! in O(its pods), and a poller tick its namespace's, where a flat store made both O(every pod in
//! the cluster) (`bench/operator-scale.sh` measured reconcile latency growing with the cluster).
//!
//! Fed by the pod watcher's events, the way kube-runtime's reflector feeds a `Store`: a relist
//! (`Init` … `InitApply` … `InitDone`) is built aside and swapped in whole, so readers never see a
//! half-listed cache that would look like missing pods.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;
use qscaler_crds::names;

/// Pods of one QWorker, by pod name.
type Owned = BTreeMap<String, Arc<Pod>>;

#[derive(Default)]
struct Index {
    /// namespace → QWorker name (the pod's label) → pod name → pod.
    pods: HashMap<String, HashMap<String, Owned>>,
}

impl Index {
    fn insert(&mut self, pod: Pod) {
        let Some((ns, name)) = identity(&pod) else {
            return;
        };
        self.remove(&ns, &name);
        let Some(owner) = owner_label(&pod) else {
            return;
        };
        self.pods
            .entry(ns)
            .or_default()
            .entry(owner)
            .or_default()
            .insert(name, Arc::new(pod));
    }

    /// Removes a pod wherever it is filed (its label may have changed since).
    fn remove(&mut self, ns: &str, name: &str) {
        let Some(by_owner) = self.pods.get_mut(ns) else {
            return;
        };
        by_owner.retain(|_, owned| {
            owned.remove(name);
            !owned.is_empty()
        });
        if by_owner.is_empty() {
            self.pods.remove(ns);
        }
    }
}

fn identity(pod: &Pod) -> Option<(String, String)> {
    Some((pod.metadata.namespace.clone()?, pod.metadata.name.clone()?))
}

fn owner_label(pod: &Pod) -> Option<String> {
    pod.metadata
        .labels
        .as_ref()?
        .get(names::LABEL_QWORKER)
        .cloned()
}

/// A shared, indexed pod cache.
#[derive(Default)]
pub struct PodIndex {
    live: RwLock<Index>,
    /// The relist being built, between `Init` and `InitDone`.
    relist: RwLock<Option<Index>>,
}

impl PodIndex {
    /// Applies one watcher event.
    pub fn apply(&self, event: &Event<Pod>) {
        match event {
            Event::Apply(pod) => write(&self.live).insert(pod.clone()),
            Event::Delete(pod) => {
                if let Some((ns, name)) = identity(pod) {
                    write(&self.live).remove(&ns, &name);
                }
            }
            Event::Init => *write(&self.relist) = Some(Index::default()),
            Event::InitApply(pod) => {
                if let Some(building) = write(&self.relist).as_mut() {
                    building.insert(pod.clone());
                }
            }
            Event::InitDone => {
                if let Some(fresh) = write(&self.relist).take() {
                    *write(&self.live) = fresh;
                }
            }
        }
    }

    /// The pods labelled as QWorker `qworker`'s in `ns`, by name.
    pub fn of(&self, ns: &str, qworker: &str) -> Vec<Arc<Pod>> {
        read(&self.live)
            .pods
            .get(ns)
            .and_then(|by_owner| by_owner.get(qworker))
            .map(|owned| owned.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every labelled pod of `ns`, grouped by QWorker name.
    pub fn by_qworker(&self, ns: &str) -> HashMap<String, Vec<Arc<Pod>>> {
        read(&self.live)
            .pods
            .get(ns)
            .map(|by_owner| {
                by_owner
                    .iter()
                    .map(|(qw, owned)| (qw.clone(), owned.values().cloned().collect()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many pods the cache holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        read(&self.live)
            .pods
            .values()
            .flat_map(|by_owner| by_owner.values())
            .map(BTreeMap::len)
            .sum()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A poisoned lock only means another thread panicked mid-update of a plain map; the map is still
/// usable, and a reconcile must not panic for it.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, qworker: Option<&str>, phase: &str) -> Pod {
        let labels = match qworker {
            Some(q) => json!({ names::LABEL_QWORKER: q }),
            None => json!({}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "status": {"phase": phase}
        }))
        .expect("pod")
    }

    fn names_of(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect()
    }

    fn phase_of(p: &Pod) -> Option<&str> {
        p.status.as_ref()?.phase.as_deref()
    }

    #[test]
    fn pods_are_found_by_namespace_and_qworker() {
        let idx = PodIndex::default();
        for p in [
            pod("a", "w-1", Some("w"), "Running"),
            pod("a", "w-2", Some("w"), "Pending"),
            pod("a", "v-1", Some("v"), "Running"),
            pod("b", "w-1", Some("w"), "Running"),
            pod("a", "plain", None, "Running"),
        ] {
            idx.apply(&Event::Apply(p));
        }
        assert_eq!(names_of(&idx.of("a", "w")), ["w-1", "w-2"]);
        assert_eq!(names_of(&idx.of("b", "w")), ["w-1"]);
        assert!(idx.of("c", "w").is_empty());
        let grouped = idx.by_qworker("a");
        assert_eq!(grouped.len(), 2);
        assert_eq!(names_of(&grouped["v"]), ["v-1"]);
        assert_eq!(idx.len(), 4, "an unlabelled pod is not kept");
    }

    #[test]
    fn an_update_replaces_and_a_delete_removes() {
        let idx = PodIndex::default();
        idx.apply(&Event::Apply(pod("a", "w-1", Some("w"), "Pending")));
        idx.apply(&Event::Apply(pod("a", "w-1", Some("w"), "Running")));
        let pods = idx.of("a", "w");
        assert_eq!(pods.len(), 1);
        assert_eq!(phase_of(&pods[0]), Some("Running"));
        idx.apply(&Event::Delete(pod("a", "w-1", Some("w"), "Running")));
        assert!(idx.of("a", "w").is_empty());
        assert!(idx.is_empty());
        assert!(idx.by_qworker("a").is_empty());
    }

    #[test]
    fn a_relabelled_pod_moves_and_an_unlabelled_one_leaves() {
        let idx = PodIndex::default();
        idx.apply(&Event::Apply(pod("a", "p", Some("w"), "Running")));
        idx.apply(&Event::Apply(pod("a", "p", Some("v"), "Running")));
        assert!(idx.of("a", "w").is_empty());
        assert_eq!(names_of(&idx.of("a", "v")), ["p"]);
        idx.apply(&Event::Apply(pod("a", "p", None, "Running")));
        assert!(idx.is_empty());
    }

    #[test]
    fn a_relist_is_swapped_in_whole_at_init_done() {
        let idx = PodIndex::default();
        idx.apply(&Event::Apply(pod("a", "old", Some("w"), "Running")));
        idx.apply(&Event::Init);
        idx.apply(&Event::InitApply(pod("a", "new", Some("w"), "Running")));
        assert_eq!(
            names_of(&idx.of("a", "w")),
            ["old"],
            "readers keep the last complete list while a relist is under way"
        );
        // Changes seen live during the relist still apply to the live view.
        idx.apply(&Event::Apply(pod("a", "live", Some("w"), "Running")));
        assert_eq!(names_of(&idx.of("a", "w")), ["live", "old"]);
        idx.apply(&Event::InitDone);
        assert_eq!(
            names_of(&idx.of("a", "w")),
            ["new"],
            "a pod missing from the relist is gone"
        );
    }

    #[test]
    fn init_apply_without_init_is_ignored_and_init_done_twice_is_harmless() {
        let idx = PodIndex::default();
        idx.apply(&Event::InitApply(pod("a", "stray", Some("w"), "Running")));
        idx.apply(&Event::Apply(pod("a", "w-1", Some("w"), "Running")));
        idx.apply(&Event::InitDone);
        idx.apply(&Event::InitDone);
        assert_eq!(names_of(&idx.of("a", "w")), ["w-1"]);
    }
}
