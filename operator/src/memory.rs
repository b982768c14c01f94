//! What the operator remembers about each QWorker between reconciles (stabilization window,
//! expectations, crash-loop streak, spec check, revision history, OOM kills, last status written), and the one owner of
//! that memory: [`MemoryStore`], whose lock is taken nowhere else. A reconcile works on one
//! QWorker's [`Memory`] inside [`MemoryStore::with`]; the decision itself is a pure function of it
//! (see `qworker_controller::decide`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use crate::controls::ControlMemory;
use crate::crash::CrashTracker;
use crate::expectations::{Expect, Expectations};
use crate::object_key::ObjectKey;
use crate::scaling::Stabilizer;
use crate::status_write::Written;

/// What the API server said of one generation's pod: a server-side dry run (or a real create) was
/// made, and refused or not. A refused generation creates no pod until the spec changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SpecCheck {
    pub generation: Option<i64>,
    /// The API server's refusal, readable; `None`: the pod was accepted.
    pub refusal: Option<String>,
}

/// One QWorker's memory.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    pub stabilizer: Option<Stabilizer>,
    pub expectations: Expectations,
    pub crash: CrashTracker,
    /// Whether the crash-loop Event was sent for the current streak.
    pub crash_reported: bool,
    /// The full hash whose revision history is known to be in place.
    revision_synced: Option<String>,
    /// Containers seen OOM-killed (their memory request gets the OOM bump).
    oom_killed: BTreeSet<String>,
    spec_check: Option<SpecCheck>,
    /// The last status written (see [`crate::status_write`]).
    pub status_written: Option<Written>,
    /// Recent drains, last non-zero backlog, failing queue (see [`crate::controls`]).
    pub controls: ControlMemory,
}

impl Memory {
    /// Records a write the pod cache has not shown yet.
    pub fn expect(&mut self, pod: &str, e: Expect, now: Instant) {
        self.expectations.record(pod, e, now);
    }

    /// The spec check of `generation`, if one was made.
    pub fn spec_check(&self, generation: Option<i64>) -> Option<&SpecCheck> {
        self.spec_check
            .as_ref()
            .filter(|c| c.generation == generation)
    }

    pub fn remember_spec_check(&mut self, check: SpecCheck) {
        self.spec_check = Some(check);
    }

    pub fn revision_synced(&self, full_hash: &str) -> bool {
        self.revision_synced.as_deref() == Some(full_hash)
    }

    pub fn set_revision_synced(&mut self, full_hash: &str) {
        self.revision_synced = Some(full_hash.to_string());
    }

    /// Adds containers seen OOM-killed now; returns every one seen so far.
    pub fn note_oom_killed(&mut self, seen: impl IntoIterator<Item = String>) -> BTreeSet<String> {
        self.oom_killed.extend(seen);
        self.oom_killed.clone()
    }
}

/// Every QWorker's memory, behind one short-held lock.
#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    by_qworker: Mutex<HashMap<ObjectKey, Memory>>,
}

impl MemoryStore {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Memory>> {
        // A panicked holder leaves at worst a half-updated window or streak, which the next
        // reconcile corrects; stopping the operator would be worse.
        self.by_qworker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on `qworker`'s memory (created empty on first use). `f` must not block: it runs
    /// under the lock.
    pub fn with<R>(&self, qworker: &ObjectKey, f: impl FnOnce(&mut Memory) -> R) -> R {
        f(self.map().entry(qworker.clone()).or_default())
    }

    pub fn forget(&self, qworker: &ObjectKey) {
        self.map().remove(qworker);
    }

    /// Forgets every QWorker not in `live`; returns those forgotten.
    pub fn forget_all_but(&self, live: &HashSet<ObjectKey>) -> Vec<ObjectKey> {
        let mut map = self.map();
        let gone: Vec<ObjectKey> = map.keys().filter(|k| !live.contains(*k)).cloned().collect();
        for k in &gone {
            map.remove(k);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_check_holds_for_its_generation_only() {
        let mut m = Memory::default();
        assert!(m.spec_check(Some(1)).is_none());
        m.remember_spec_check(SpecCheck {
            generation: Some(1),
            refusal: Some("no".into()),
        });
        assert_eq!(
            m.spec_check(Some(1)).and_then(|c| c.refusal.as_deref()),
            Some("no")
        );
        assert!(m.spec_check(Some(2)).is_none());
    }

    #[test]
    fn forgetting_keeps_the_live_ones() {
        let store = MemoryStore::default();
        let (a, b) = (ObjectKey::new("ns", "a"), ObjectKey::new("ns", "b"));
        store.with(&a, |m| m.set_revision_synced("h"));
        store.with(&b, |m| m.set_revision_synced("h"));
        let gone = store.forget_all_but(&HashSet::from([a.clone()]));
        assert_eq!(gone, vec![b.clone()]);
        assert!(store.with(&a, |m| m.revision_synced("h")));
        assert!(!store.with(&b, |m| m.revision_synced("h")));
    }
}
