//! The pure heart of the operator: from the pods it sees and the count it wants, which pods to create,
//! drain, un-drain and delete. No I/O; the reconcile applies the [`Plan`] and nothing else decides.
//!
//! Rules (DESIGN.md, "The protocol"):
//! - Terminal pods (Succeeded, Failed) are deleted; they are not workers any more.
//! - Alive = Pending, Running or Unknown. Draining pods are alive (a drain is not instant) and count
//!   against `maxReplicas`, so the operator never runs more than `maxReplicas` processes.
//! - Scale-down removes exactly the excess of active (alive, not draining) pods over desired, in this
//!   order: pods not yet running (deleted outright: no work is lost), then pods reported idle, then pods
//!   of an old hash, then the newest. "Not yet running" is read from the containers, not the pod
//!   phase: a pod stays Pending while any container waits (a sidecar whose ConfigMap is missing)
//!   although the worker's container runs and holds a task. A Pending pod counts as not started
//!   only when none of its containers ever ran and the supervisor never reported activity, or when
//!   what ran has stopped and nothing runs now; any other Pending pod is drained like a running one.
//!   A draining Pending pod in which nothing runs any more (its worker exited after the drain, a
//!   sidecar still waits) is deleted: it would otherwise never end. Already-draining pods are not active, so they count toward the
//!   reduction. Old-hash pods are all leaving anyway: they go by the rollout rule (first, as far as
//!   capacity allows); the excess of new-hash pods over desired goes in the order above. While a
//!   rollout is under way new-hash pods not yet running are kept (they are the replacements).
//! - Scale-up first un-drains current-hash pods drained for scale-down (their process is warm), then
//!   creates the rest.
//! - Rollout (active pods of an old hash): new-hash pods are created up to `desired + maxSurge` alive
//!   (never above `maxReplicas`), old Pending pods are deleted, and old Running pods are drained only
//!   while the Running active pods stay at or above `desired - maxUnavailable`. When `maxReplicas`
//!   leaves no surge room and `maxUnavailable` is 0 the rollout could never move, so one pod of
//!   unavailability is allowed then (the same reason Deployments refuse surge = unavailable = 0).
//!
//! The plan is idempotent: applying it to the observed pods and planning again yields an empty plan
//! (property-tested below); with expectations ([`crate::expectations`]) overlaid, a lagging cache
//! cannot make it create or drain twice.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use qscaler_crds::names::DrainReason;
use qscaler_crds::qworker::RolloutStrategy;
use qscaler_crds::validation::parse_percent;

pub use qscaler_crds::worker_pod::Phase;

/// What planning needs to know about one worker pod.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ObservedPod {
    pub name: String,
    pub phase: Phase,
    /// Created from the current pod-spec hash.
    pub current: bool,
    /// The drain annotation, if set (an unknown reason counts as scale-down).
    pub draining: Option<DrainReason>,
    /// The supervisor reported the worker idle.
    pub idle: bool,
    /// A deletion is under way (deletionTimestamp set): alive until gone, never chosen again.
    pub deleting: bool,
    /// Creation time in milliseconds (any monotone unit): "newest" means the largest.
    pub created: i64,
    /// A container runs or has run (running or terminated, now or before a restart), or the
    /// supervisor reported activity: work may have been taken, whatever the pod phase says.
    pub started: bool,
    /// What ran has stopped: no container runs now and one has terminated.
    pub stopped: bool,
}

impl ObservedPod {
    fn active(&self) -> bool {
        self.phase.is_alive() && self.draining.is_none() && !self.deleting
    }

    /// No process of this pod can hold a task: Pending and never started, or what ran has stopped.
    /// Deleting it outright loses nothing.
    pub fn nothing_runs(&self) -> bool {
        self.phase == Phase::Pending && (!self.started || self.stopped)
    }
}

/// Why a pod is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeleteReason {
    /// The worker exited 0 (drained, or finished by itself).
    Succeeded,
    /// The worker failed; the effects layer counts it for crash-loop backoff.
    Failed,
    /// Scale-down of a pod that never ran: nothing to finish.
    NotStarted,
    /// An old-hash pod that never ran, replaced by a new-hash one.
    Outdated,
    /// A drained pod whose worker has exited although the pod never ended (a container that
    /// never started keeps it Pending).
    Exited,
}

/// Rollout pacing resolved against the desired count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    pub max_surge: i32,
    pub max_unavailable: i32,
}

impl Pacing {
    /// As a Deployment: percentages of desired, surge rounded up, unavailable rounded down; defaults
    /// surge 1, unavailable 0 (capacity kept at desired throughout). Invalid values take the default.
    pub fn resolve(strategy: &RolloutStrategy, desired: i32) -> Pacing {
        let resolve = |v: &Option<IntOrString>, default: i32, round_up: bool| match v {
            None => default,
            Some(IntOrString::Int(i)) => (*i).max(0),
            Some(IntOrString::String(s)) => match parse_percent(s) {
                Some(p) => {
                    let scaled = i64::from(desired.max(0)) * i64::from(p);
                    let v = if round_up {
                        (scaled + 99) / 100
                    } else {
                        scaled / 100
                    };
                    i32::try_from(v).unwrap_or(i32::MAX)
                }
                None => default,
            },
        };
        Pacing {
            max_surge: resolve(&strategy.max_surge, 1, true),
            max_unavailable: resolve(&strategy.max_unavailable, 0, false),
        }
    }
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            max_surge: 1,
            max_unavailable: 0,
        }
    }
}

/// Everything planning looks at.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    pub pods: &'a [ObservedPod],
    pub desired: i32,
    pub max_replicas: i32,
    pub pacing: Pacing,
    /// False while crash-loop backoff holds creations back.
    pub may_create: bool,
}

/// What to do, in order: delete, un-drain, drain, create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: i32,
    pub delete: Vec<(String, DeleteReason)>,
    pub drain: Vec<(String, DrainReason)>,
    pub undrain: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create == 0
            && self.delete.is_empty()
            && self.drain.is_empty()
            && self.undrain.is_empty()
    }
}

/// The scale-down order: not running, idle, old hash, the rest; newest first within a class.
fn victim_key(p: &ObservedPod) -> (u8, std::cmp::Reverse<i64>, &str) {
    let class = if p.nothing_runs() {
        0
    } else if p.idle {
        1
    } else if !p.current {
        2
    } else {
        3
    };
    (class, std::cmp::Reverse(p.created), p.name.as_str())
}

/// The plan for one QWorker. See the module doc for the rules.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut out = Plan::default();
    let max = input.max_replicas.max(0);
    let desired = input.desired.clamp(0, max);

    for p in input.pods.iter().filter(|p| !p.deleting) {
        match p.phase {
            Phase::Succeeded => out.delete.push((p.name.clone(), DeleteReason::Succeeded)),
            Phase::Failed => out.delete.push((p.name.clone(), DeleteReason::Failed)),
            _ if p.draining.is_some() && p.started && p.nothing_runs() => {
                out.delete.push((p.name.clone(), DeleteReason::Exited))
            }
            _ => {}
        }
    }
    let exited: Vec<String> = out
        .delete
        .iter()
        .filter(|(_, r)| *r == DeleteReason::Exited)
        .map(|(n, _)| n.clone())
        .collect();
    // A deleted pod stays alive until it is gone (its process may already run): it holds its slot,
    // so a replacement comes on a later pass, never above maxReplicas.
    let alive = input.pods.iter().filter(|p| p.phase.is_alive()).count() as i32;
    // A rollout lasts while any old-hash pod is alive (draining or deleted ones too: they hold a slot).
    let rolling = input.pods.iter().any(|p| p.phase.is_alive() && !p.current);

    // Scale-down: exactly the excess of active new-hash pods, in victim order. (Old-hash pods are
    // all going anyway; they leave through the rollout rule below, which goes first in practice.)
    let mut new: Vec<&ObservedPod> = input
        .pods
        .iter()
        .filter(|p| p.active() && p.current)
        .collect();
    new.sort_by(|a, b| victim_key(a).cmp(&victim_key(b)));
    let excess = (new.len() as i32 - desired).max(0) as usize;
    for victim in new.drain(..excess) {
        if victim.nothing_runs() {
            out.delete
                .push((victim.name.clone(), DeleteReason::NotStarted));
        } else {
            out.drain
                .push((victim.name.clone(), DrainReason::ScaleDown));
        }
    }

    // Scale-up: un-drain warm current-hash pods before creating any.
    let shortfall = desired - new.len() as i32;
    if shortfall > 0 {
        let mut drained: Vec<&ObservedPod> = input
            .pods
            .iter()
            .filter(|p| {
                p.phase.is_alive()
                    && p.current
                    && !p.deleting
                    && p.draining == Some(DrainReason::ScaleDown)
                    && !exited.contains(&p.name)
            })
            .collect();
        drained.sort_by_key(|p| (p.phase != Phase::Running, std::cmp::Reverse(p.created)));
        for p in drained.into_iter().take(shortfall as usize) {
            out.undrain.push(p.name.clone());
            new.push(p);
        }
    }

    // Rollout: old pods that never ran are replaced at once; old Running pods are drained while
    // the Running active pods stay >= desired - maxUnavailable.
    let surge = input.pacing.max_surge.max(0).min((max - desired).max(0));
    let unavailable = if surge == 0 {
        input.pacing.max_unavailable.max(1)
    } else {
        input.pacing.max_unavailable.max(0)
    };
    let mut old: Vec<&ObservedPod> = input
        .pods
        .iter()
        .filter(|p| p.active() && !p.current)
        .collect();
    // Idle first, then the oldest (they have had the longest to finish).
    old.sort_by_key(|p| (!p.idle, p.created, p.name.as_str()));
    let running = new
        .iter()
        .chain(old.iter())
        .filter(|p| p.phase == Phase::Running)
        .count() as i32;
    let mut room = (running - (desired - unavailable)).max(0);
    for p in old {
        match p.phase {
            Phase::Pending if p.nothing_runs() => {
                out.delete.push((p.name.clone(), DeleteReason::Outdated));
            }
            Phase::Running if room > 0 => {
                out.drain.push((p.name.clone(), DrainReason::Rollout));
                room -= 1;
            }
            Phase::Running => {}
            // Unknown, or Pending with a container at work: not available anyway, so draining it
            // costs no capacity (and deleting it would cut its task).
            _ => out.drain.push((p.name.clone(), DrainReason::Rollout)),
        }
    }

    // Creates: new-hash pods up to desired; during a rollout at most desired + surge alive.
    let cap = if rolling {
        desired.saturating_add(surge).min(max)
    } else {
        max
    };
    if input.may_create {
        let shortfall = desired - new.len() as i32;
        out.create = shortfall.min(cap - alive).max(0);
    }
    out
}

/// The pods as they will be once `plan` is applied: created pods appear Pending with the current
/// hash, deleted ones are marked deleting (they are alive until the API has removed them).
/// Used by tests and by the expectations overlay.
pub fn apply(pods: &[ObservedPod], plan: &Plan, now: i64, name_prefix: &str) -> Vec<ObservedPod> {
    let mut out: Vec<ObservedPod> = pods.to_vec();
    for p in &mut out {
        if plan.delete.iter().any(|(n, _)| *n == p.name) {
            p.deleting = true;
        }
        if let Some((_, r)) = plan.drain.iter().find(|(n, _)| *n == p.name) {
            p.draining = Some(*r);
        }
        if plan.undrain.contains(&p.name) {
            p.draining = None;
        }
    }
    for i in 0..plan.create {
        out.push(ObservedPod {
            name: format!("{name_prefix}{now}-{i}"),
            phase: Phase::Pending,
            current: true,
            draining: None,
            idle: false,
            deleting: false,
            created: now,
            started: false,
            stopped: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod(name: &str, phase: Phase, current: bool, created: i64) -> ObservedPod {
        ObservedPod {
            name: name.into(),
            phase,
            current,
            draining: None,
            idle: false,
            deleting: false,
            created,
            // A Running pod's containers run; a Pending one's have not started.
            started: phase != Phase::Pending,
            stopped: matches!(phase, Phase::Succeeded | Phase::Failed),
        }
    }

    fn input(pods: &[ObservedPod], desired: i32, max: i32) -> PlanInput<'_> {
        PlanInput {
            pods,
            desired,
            max_replicas: max,
            pacing: Pacing::default(),
            may_create: true,
        }
    }

    #[test]
    fn empty_to_five() {
        let p = plan(&input(&[], 5, 10));
        assert_eq!(p.create, 5);
        assert!(p.delete.is_empty() && p.drain.is_empty());
    }

    #[test]
    fn never_creates_above_max() {
        let p = plan(&input(&[], 50, 10));
        assert_eq!(p.create, 10);
    }

    #[test]
    fn scale_down_order_pending_idle_newest() {
        let mut pods = vec![
            pod("run-a", Phase::Running, true, 2),
            pod("run-b", Phase::Running, true, 3),
            pod("pending", Phase::Pending, true, 4),
            pod("idle", Phase::Running, true, 0),
        ];
        pods[3].idle = true;
        let want: [&[&str]; 4] = [
            &[],
            &["idle"],
            &["idle", "run-b"],
            &["idle", "run-b", "run-a"],
        ];
        for (i, drains) in want.iter().enumerate() {
            let desired = 3 - i as i32;
            let p = plan(&input(&pods, desired, 10));
            let got: Vec<&str> = p.drain.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(&got, drains, "desired {desired}");
            assert_eq!(p.delete, vec![("pending".into(), DeleteReason::NotStarted)]);
            assert!(p.drain.iter().all(|(_, r)| *r == DrainReason::ScaleDown));
            assert_eq!(p.create, 0);
        }
    }

    #[test]
    fn old_hash_pods_go_before_new_ones() {
        let pods = vec![
            pod("old", Phase::Running, false, 1),
            pod("new-a", Phase::Running, true, 2),
            pod("new-b", Phase::Running, true, 3),
        ];
        let p = plan(&input(&pods, 2, 10));
        assert_eq!(p.drain, vec![("old".into(), DrainReason::Rollout)]);
        let p = plan(&input(&pods, 1, 10));
        assert_eq!(
            p.drain,
            vec![
                ("new-b".into(), DrainReason::ScaleDown),
                ("old".into(), DrainReason::Rollout)
            ]
        );
    }

    #[test]
    fn draining_pods_count_toward_the_reduction() {
        let mut pods = vec![
            pod("a", Phase::Running, true, 1),
            pod("b", Phase::Running, true, 2),
            pod("c", Phase::Running, true, 3),
        ];
        pods[2].draining = Some(DrainReason::ScaleDown);
        assert!(plan(&input(&pods, 2, 10)).is_empty());
        let p = plan(&input(&pods, 1, 10));
        assert_eq!(p.drain, vec![("b".into(), DrainReason::ScaleDown)]);
    }

    #[test]
    fn undrain_beats_create() {
        let mut pods = vec![
            pod("a", Phase::Running, true, 1),
            pod("b", Phase::Running, true, 2),
        ];
        pods[1].draining = Some(DrainReason::ScaleDown);
        let p = plan(&input(&pods, 3, 10));
        assert_eq!(p.undrain, vec!["b".to_string()]);
        assert_eq!(p.create, 1);
    }

    #[test]
    fn rollout_drains_are_not_undrained_and_old_draining_pods_are_alive() {
        let mut pods = vec![pod("old", Phase::Running, false, 1)];
        pods[0].draining = Some(DrainReason::Rollout);
        // max 1: the draining old pod still holds the only slot.
        let p = plan(&input(&pods, 1, 1));
        assert!(p.undrain.is_empty());
        assert_eq!(p.create, 0);
        let p = plan(&input(&pods, 1, 2));
        assert_eq!(p.create, 1);
    }

    #[test]
    fn terminal_pods_are_deleted_and_replaced() {
        let pods = vec![
            pod("ok", Phase::Succeeded, true, 1),
            pod("bad", Phase::Failed, true, 2),
        ];
        let p = plan(&input(&pods, 2, 2));
        assert_eq!(p.create, 2);
        assert_eq!(p.delete.len(), 2);
        let mut gated = input(&pods, 2, 2);
        gated.may_create = false;
        assert_eq!(plan(&gated).create, 0);
    }

    #[test]
    fn pods_being_deleted_are_alive_but_never_chosen() {
        let mut pods = vec![pod("gone", Phase::Running, true, 1)];
        pods[0].deleting = true;
        let p = plan(&input(&pods, 1, 1));
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn rollout_with_defaults_surges_one_then_drains_as_new_ones_run() {
        let pods = vec![
            pod("o1", Phase::Running, false, 1),
            pod("o2", Phase::Running, false, 2),
            pod("o3", Phase::Running, false, 3),
        ];
        let p = plan(&input(&pods, 3, 10));
        assert_eq!(p.create, 1);
        assert!(p.drain.is_empty(), "no capacity to spare yet: {p:?}");
        let mut pods = pods;
        pods.push(pod("n1", Phase::Running, true, 4));
        let p = plan(&input(&pods, 3, 10));
        assert_eq!(p.create, 0);
        assert_eq!(p.drain, vec![("o1".into(), DrainReason::Rollout)]);
    }

    #[test]
    fn rollout_at_max_allows_one_unavailable() {
        let pods = vec![
            pod("o1", Phase::Running, false, 1),
            pod("o2", Phase::Running, false, 2),
        ];
        let p = plan(&input(&pods, 2, 2));
        assert_eq!(p.create, 0);
        assert_eq!(p.drain, vec![("o1".into(), DrainReason::Rollout)]);
    }

    /// A Pending pod whose worker container runs (a second container waits for a missing
    /// ConfigMap) may hold a task: scale-down and rollout drain it, never delete it.
    #[test]
    fn pending_pods_with_a_running_container_are_drained_not_deleted() {
        let mut busy = pod("busy", Phase::Pending, true, 5);
        busy.started = true;
        let pods = vec![pod("run", Phase::Running, true, 1), busy.clone()];
        let p = plan(&input(&pods, 1, 10));
        assert!(p.delete.is_empty(), "{p:?}");
        // The newest goes first among pods at work.
        assert_eq!(p.drain, vec![("busy".into(), DrainReason::ScaleDown)]);
        let p = plan(&input(&pods, 0, 10));
        assert!(p.delete.is_empty(), "{p:?}");
        assert_eq!(p.drain.len(), 2);
        // Activity reported, no container status yet: the same.
        let mut reported = pod("reported", Phase::Pending, true, 5);
        reported.started = true;
        let p = plan(&input(&[reported], 0, 10));
        assert!(p.delete.is_empty() && p.drain.len() == 1, "{p:?}");
        // A rollout drains an old one at work (it is not Running, so this costs no capacity).
        busy.current = false;
        let p = plan(&input(&[busy.clone()], 1, 10));
        assert_eq!(p.drain, vec![("busy".into(), DrainReason::Rollout)]);
        assert!(p.delete.is_empty());
        assert_eq!(p.create, 1);
    }

    #[test]
    fn pending_pods_in_which_nothing_runs_any_more_are_deleted() {
        // Never started: deleted outright, as before.
        let fresh = pod("fresh", Phase::Pending, true, 5);
        assert_eq!(
            plan(&input(&[fresh], 0, 10)).delete,
            vec![("fresh".into(), DeleteReason::NotStarted)]
        );
        // The worker ran and exited, a sidecar still waits: nothing to cut.
        let mut done = pod("done", Phase::Pending, true, 5);
        done.started = true;
        done.stopped = true;
        assert_eq!(
            plan(&input(&[done.clone()], 0, 10)).delete,
            vec![("done".into(), DeleteReason::NotStarted)]
        );
        // Drained earlier, exited since: deleted, and never un-drained.
        done.draining = Some(DrainReason::ScaleDown);
        let p = plan(&input(&[done.clone()], 1, 10));
        assert_eq!(p.delete, vec![("done".into(), DeleteReason::Exited)]);
        assert!(p.undrain.is_empty());
        // Drained and still at work: left to finish.
        done.stopped = false;
        assert!(plan(&input(&[done], 0, 10)).is_empty());
    }

    #[test]
    fn old_pending_pods_are_replaced_at_once() {
        let pods = vec![pod("o1", Phase::Pending, false, 1)];
        let p = plan(&input(&pods, 1, 5));
        assert_eq!(p.delete, vec![("o1".into(), DeleteReason::Outdated)]);
        assert_eq!(p.create, 1);
    }

    #[test]
    fn pacing_resolution() {
        let s = |surge: Option<IntOrString>, unav: Option<IntOrString>| RolloutStrategy {
            max_surge: surge,
            max_unavailable: unav,
        };
        assert_eq!(Pacing::resolve(&s(None, None), 10), Pacing::default());
        let p = Pacing::resolve(
            &s(
                Some(IntOrString::String("25%".into())),
                Some(IntOrString::String("25%".into())),
            ),
            10,
        );
        assert_eq!(
            p,
            Pacing {
                max_surge: 3,
                max_unavailable: 2
            }
        );
        let p = Pacing::resolve(
            &s(Some(IntOrString::Int(4)), Some(IntOrString::Int(-1))),
            10,
        );
        assert_eq!(
            p,
            Pacing {
                max_surge: 4,
                max_unavailable: 0
            }
        );
        let p = Pacing::resolve(&s(Some(IntOrString::String("x".into())), None), 10);
        assert_eq!(p.max_surge, 1);
    }

    fn arb_pod() -> impl Strategy<Value = ObservedPod> {
        (
            prop_oneof![
                Just(Phase::Pending),
                Just(Phase::Running),
                Just(Phase::Running),
                Just(Phase::Succeeded),
                Just(Phase::Failed),
                Just(Phase::Unknown)
            ],
            any::<bool>(),
            prop_oneof![
                4 => Just(None),
                1 => Just(Some(DrainReason::ScaleDown)),
                1 => Just(Some(DrainReason::Rollout))
            ],
            any::<bool>(),
            prop::bool::weighted(0.1),
            0i64..100,
            any::<bool>(),
            prop::bool::weighted(0.2),
        )
            .prop_map(
                |(phase, current, draining, idle, deleting, created, started, stopped)| {
                    ObservedPod {
                        name: String::new(),
                        phase,
                        current,
                        draining,
                        idle,
                        deleting,
                        created,
                        // Running/Unknown pods have started; a Pending one may have (a sidecar waits).
                        started: started || !matches!(phase, Phase::Pending),
                        stopped: stopped && started,
                    }
                },
            )
    }

    fn arb_pods() -> impl Strategy<Value = Vec<ObservedPod>> {
        prop::collection::vec(arb_pod(), 0..16).prop_map(|mut v| {
            for (i, p) in v.iter_mut().enumerate() {
                p.name = format!("p{i}");
            }
            v
        })
    }

    fn arb_pacing() -> impl Strategy<Value = Pacing> {
        (0i32..4, 0i32..4).prop_map(|(s, u)| Pacing {
            max_surge: s,
            max_unavailable: u,
        })
    }

    fn alive(pods: &[ObservedPod]) -> i32 {
        pods.iter().filter(|p| p.phase.is_alive()).count() as i32
    }

    fn active(pods: &[ObservedPod]) -> i32 {
        pods.iter().filter(|p| p.active()).count() as i32
    }

    /// One step of a world that moves on: Pending starts, draining pods finish, terminal pods stay
    /// until deleted, deleted pods vanish (at their own pace).
    fn progress(pods: &mut Vec<ObservedPod>, step: u32) {
        let mut i = 0;
        pods.retain(|p| {
            i += 1;
            !(p.deleting && (i + step as usize).is_multiple_of(3))
        });
        for (i, p) in pods.iter_mut().enumerate() {
            if (i as u32 + step).is_multiple_of(2) {
                continue;
            }
            match (p.phase, p.draining.is_some() || p.deleting) {
                (Phase::Pending | Phase::Unknown, false) => {
                    p.phase = Phase::Running;
                    p.started = true;
                    p.stopped = false;
                }
                (Phase::Pending | Phase::Running | Phase::Unknown, true) => {
                    p.phase = Phase::Succeeded
                }
                _ => {}
            }
        }
    }

    proptest! {
        #[test]
        fn never_above_max_by_creating(pods in arb_pods(), desired in 0i32..20, max in 0i32..12, pacing in arb_pacing(), may_create in any::<bool>()) {
            let p = plan(&PlanInput { pods: &pods, desired, max_replicas: max, pacing, may_create });
            let after = apply(&pods, &p, 1000, "new");
            if p.create > 0 {
                prop_assert!(alive(&after) <= max, "{} alive > max {max}: {p:?}", alive(&after));
            }
            prop_assert!(alive(&after) <= alive(&pods).max(max));
            if !may_create { prop_assert_eq!(p.create, 0); }
        }

        #[test]
        fn never_more_scale_down_drains_than_the_excess(pods in arb_pods(), desired in 0i32..20, max in 0i32..12, pacing in arb_pacing()) {
            // Outside a rollout: exactly the excess goes (rollouts have their own property below).
            let pods: Vec<ObservedPod> = pods.into_iter().map(|mut p| { p.current = true; p }).collect();
            let p = plan(&PlanInput { pods: &pods, desired, max_replicas: max, pacing, may_create: true });
            let excess = (active(&pods) - desired.min(max)).max(0);
            let removals = p.drain.iter().filter(|(_, r)| *r == DrainReason::ScaleDown).count() as i32
                + p.delete.iter().filter(|(_, r)| *r == DeleteReason::NotStarted).count() as i32;
            prop_assert_eq!(removals, excess);
            prop_assert!(p.undrain.is_empty() || removals == 0);
            prop_assert!(p.create == 0 || removals == 0);
            // Only alive, not deleting pods are drained or un-drained; no pod twice.
            let mut seen = std::collections::HashSet::new();
            for name in p.drain.iter().map(|(n, _)| n).chain(p.undrain.iter()).chain(p.delete.iter().map(|(n, _)| n)) {
                prop_assert!(seen.insert(name.clone()), "{name} twice in {p:?}");
                let pod = pods.iter().find(|q| &q.name == name).unwrap();
                prop_assert!(!pod.deleting);
            }
        }

        #[test]
        fn idempotent_on_a_second_pass(pods in arb_pods(), desired in 0i32..20, max in 0i32..12, pacing in arb_pacing()) {
            let input = PlanInput { pods: &pods, desired, max_replicas: max, pacing, may_create: true };
            let first = plan(&input);
            let after = apply(&pods, &first, 1000, "new");
            let second = plan(&PlanInput { pods: &after, ..input });
            prop_assert!(second.is_empty(), "first {first:?}\nsecond {second:?}\npods {pods:?}");
        }

        #[test]
        fn converges_to_desired_current_pods(pods in arb_pods(), desired in 0i32..10, max in 0i32..12, pacing in arb_pacing()) {
            let mut pods = pods;
            let d = desired.min(max);
            let start_alive = alive(&pods);
            for step in 0..200 {
                let p = plan(&PlanInput { pods: &pods, desired, max_replicas: max, pacing, may_create: true });
                pods = apply(&pods, &p, step, &format!("s{step}-"));
                prop_assert!(alive(&pods) <= start_alive.max(max));
                progress(&mut pods, step as u32);
            }
            let p = plan(&PlanInput { pods: &pods, desired, max_replicas: max, pacing, may_create: true });
            pods = apply(&pods, &p, 999, "last-");
            let current_active = pods.iter().filter(|p| p.active() && p.current).count() as i32;
            prop_assert_eq!(current_active, d, "{:?}", pods);
            prop_assert_eq!(active(&pods), d);
        }

        #[test]
        fn rollout_keeps_capacity(n in 1i32..8, extra_max in 0i32..4, pacing in arb_pacing()) {
            // n old Running pods, desired n: Running active pods never drop below n - unavailable
            // (with one allowed when there is no surge room).
            let max = n + extra_max;
            let mut pods: Vec<ObservedPod> = (0..n).map(|i| pod(&format!("o{i}"), Phase::Running, false, i as i64)).collect();
            let surge = pacing.max_surge.min(max - n);
            let floor = n - if surge == 0 { pacing.max_unavailable.max(1) } else { pacing.max_unavailable };
            for step in 0..100 {
                let p = plan(&PlanInput { pods: &pods, desired: n, max_replicas: max, pacing, may_create: true });
                pods = apply(&pods, &p, 100 + step, &format!("s{step}-"));
                let running_active = pods.iter().filter(|p| p.active() && p.phase == Phase::Running).count() as i32;
                prop_assert!(running_active >= floor.min(n), "step {step}: {running_active} < {floor}: {pods:?}");
                prop_assert!(alive(&pods) <= max);
                progress(&mut pods, step as u32);
            }
            prop_assert_eq!(pods.iter().filter(|p| p.active() && p.current).count() as i32, n);
            prop_assert!(pods.iter().all(|p| p.current || !p.phase.is_alive()));
        }
    }
}
