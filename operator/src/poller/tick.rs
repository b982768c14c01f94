//! One poller tick as a pure function: from what the caches show ([`QueueView`]s) and what the
//! broker answered, the readings to store, the reconciles to trigger, the broker health, and the
//! task-return work (terminal pods to return, departed pods to look up, whether to sweep). The
//! I/O loop in `poller/mod.rs` carries the [`Actions`] out and reports each result back through
//! the [`TickState`] methods.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use qscaler_crds::names::keys;
use qscaler_crds::worker_pod::WorkerPod;
use qscaler_crds::QWorker;

use super::returns::{Fate, PodInfo};
use crate::arrivals::Arrivals;
use crate::broker::{BrokerError, Depth, QueueError, QueueQuery};
use crate::object_key::ObjectKey;
use crate::readings::{ReadError, Reading};
use crate::scaling::{task_seconds, wanted};
use crate::task_rate::TaskRate;

/// The least time between two triggers caused only by a changed depth (status display): as often
/// as the status may show a new depth (a reconcile sooner would only hold the write back).
pub(crate) const STATUS_REFRESH: Duration = crate::status_write::DEPTH_REFRESH;
/// How often lists of unknown pods are looked for (and a live departed pod looked up again).
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How soon a failed look-up of a departed pod is retried.
const LOOK_UP_RETRY: Duration = Duration::from_secs(1);

/// Broker health as a poller last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Health {
    pub ok: bool,
    pub auth_failed: bool,
    pub message: String,
}

impl Health {
    fn of<T>(result: &Result<T, BrokerError>) -> Health {
        match result {
            Ok(_) => Health {
                ok: true,
                auth_failed: false,
                message: "connected".into(),
            },
            Err(e) => Health {
                ok: false,
                auth_failed: matches!(e, BrokerError::Auth(_)),
                message: e.to_string(),
            },
        }
    }
}

/// What a poller last told a QWorker about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Told {
    pub desired: Option<i32>,
    pub depth: Option<Depth>,
    pub at: Instant,
}

/// Whether a new reading is worth a reconcile: the desired count (or reachability) changed, or the
/// depth changed and the last trigger is older than [`STATUS_REFRESH`].
pub(crate) fn should_trigger(
    told: Option<&Told>,
    desired: Option<i32>,
    depth: Option<Depth>,
    now: Instant,
) -> bool {
    match told {
        None => true,
        Some(t) => {
            t.desired != desired
                || (t.depth != depth && now.saturating_duration_since(t.at) >= STATUS_REFRESH)
        }
    }
}

/// What the poller needs of one QWorker.
#[derive(Clone, Debug)]
pub(crate) struct QueueView {
    pub qw: ObjectKey,
    pub queue: String,
    /// What the QWorker's scale config asks of a depth.
    pub scale: qscaler_crds::ScaleConfig,
    /// Its pods' names start with this (`<qworker>-`).
    pub prefix: String,
    /// One per queue of the QWorker (`queue`, or each of `queues`), read in the same round trip.
    pub queries: Vec<QueueQuery>,
    /// Its pods that ended (Succeeded/Failed).
    pub terminal: Vec<String>,
    /// Every pod of it the cache shows.
    pub present: HashSet<String>,
    /// Of every present pod.
    pub info: HashMap<String, PodInfo>,
    /// For lists of pods never seen (the sweep).
    pub template: PodInfo,
}

impl QueueView {
    /// `pods` are those labelled as `qw`'s; only its workers (see [`WorkerPod`]) count.
    pub fn of(qw: &QWorker, pods: &[Arc<Pod>]) -> QueueView {
        let ns = qw.metadata.namespace.clone().unwrap_or_default();
        let mut alive = vec![];
        let mut terminal = vec![];
        let mut present = HashSet::new();
        let mut info = HashMap::new();
        for (p, w) in pods
            .iter()
            .filter_map(|p| Some((p, WorkerPod::from_pod(p, qw)?)))
        {
            present.insert(w.name.clone());
            info.insert(w.name.clone(), PodInfo::of(p));
            if w.phase.is_terminal() {
                terminal.push(w.name);
            } else {
                alive.push(w.name);
            }
        }
        let sc = &qw.spec.scale_config;
        let names = sc.queue_names();
        // Task mode has one queue: its pods' processing lists are that queue's.
        let queue = names.first().copied().unwrap_or_default().to_string();
        let consumers: Vec<String> = alive
            .iter()
            .map(|pod| keys::consumer(Some(&ns), pod))
            .collect();
        QueueView {
            queries: names
                .iter()
                .map(|q| QueueQuery {
                    queue: q.to_string(),
                    format: sc.format,
                    consumers: consumers.clone(),
                    group: sc.stream_group.clone(),
                })
                .collect(),
            qw: ObjectKey::of(qw),
            scale: qw.spec.scale_config.clone(),
            prefix: format!("{}-", qw.metadata.name.as_deref().unwrap_or_default()),
            queue,
            terminal,
            present,
            info,
            template: PodInfo::of_template(qw),
        }
    }
}

/// A pod whose processing list is to be returned.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Return {
    pub qw: ObjectKey,
    pub queue: String,
    pub pod: String,
    pub info: PodInfo,
}

/// A pod that left a QWorker's view and whose processing list is not returned yet.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Departed {
    pub qw: ObjectKey,
    pub queue: String,
    pub info: PodInfo,
    /// When to look it up (again).
    pub check_at: Instant,
    /// Whether "it still runs" was logged.
    pub told: bool,
}

/// The broker's answer to one tick's queries.
pub(crate) type DepthsResult = Result<Vec<Result<Depth, QueueError>>, BrokerError>;

/// What one tick asks the I/O loop to do.
#[derive(Debug, Default)]
pub(crate) struct Actions {
    /// The broker health now; `None` only before the first tick.
    pub health: Option<Health>,
    pub readings: Vec<(ObjectKey, Reading)>,
    /// QWorkers whose reconcile is worth running now.
    pub trigger: Vec<ObjectKey>,
    /// Queues that just became unreadable (logged once per outage).
    pub unreadable: Vec<(ObjectKey, String)>,
    /// Ended pods in view whose lists go back (report each with [`TickState::returned`]).
    pub give_back: Vec<Return>,
    /// Pods that left the view and are due for a look-up (report with
    /// [`TickState::looked_up`]), by name.
    pub look_up: Vec<(String, Departed)>,
    /// Whether the slow sweep of unknown pods' lists is due.
    pub sweep: bool,
}

/// A QWorker's queue and pods as the last tick saw them.
#[derive(Debug)]
struct LastSeen {
    queue: String,
    pods: HashMap<String, PodInfo>,
}

/// One pod's processing list of one queue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct InFlightList {
    queue: String,
    pod: String,
}

/// What a poller carries from one tick to the next.
#[derive(Debug)]
pub(crate) struct TickState {
    told: HashMap<ObjectKey, Told>,
    /// Per QWorker, what the last tick showed.
    seen: HashMap<ObjectKey, LastSeen>,
    /// Lists already returned of pods still in view.
    returned: HashSet<String>,
    departed: HashMap<String, Departed>,
    /// Lists whose pod the last sweep did not find.
    orphans: HashSet<InFlightList>,
    last_sweep: Instant,
    /// Seconds per task learned per QWorker and queue.
    rates: HashMap<(ObjectKey, String), TaskRate>,
    /// Per QWorker, when its backlog arrived (for the drain target).
    arrivals: HashMap<ObjectKey, Arrivals>,
}

impl TickState {
    pub fn new(now: Instant) -> TickState {
        TickState {
            told: HashMap::new(),
            seen: HashMap::new(),
            returned: HashSet::new(),
            departed: HashMap::new(),
            orphans: HashSet::new(),
            last_sweep: now,
            rates: HashMap::new(),
            arrivals: HashMap::new(),
        }
    }

    /// The ticks' one decision: see the module doc.
    pub fn tick(&mut self, views: &[QueueView], result: &DepthsResult, now: Instant) -> Actions {
        let mut out = Actions {
            health: Some(Health::of(result)),
            ..Actions::default()
        };
        let mut next = 0;
        for v in views.iter() {
            let first = next;
            next += v.queries.len();
            let (desired, depth, reading) = match result {
                Ok(depths) => {
                    match self.combine(v, depths.get(first..next).unwrap_or_default(), now) {
                        Ok(d) => (Some(wanted(&v.scale, d)), Some(d), Ok(d)),
                        Err(e) => {
                            if self.told.get(&v.qw).is_none_or(|t| t.desired.is_some()) {
                                out.unreadable.push((v.qw.clone(), e.to_string()));
                            }
                            (None, None, Err(ReadError::Queue(e.to_string())))
                        }
                    }
                }
                Err(e) => (None, None, Err(ReadError::Broker(e.to_string()))),
            };
            out.readings.push((
                v.qw.clone(),
                Reading {
                    result: reading,
                    at: now,
                },
            ));
            if should_trigger(self.told.get(&v.qw), desired, depth, now) {
                self.told.insert(
                    v.qw.clone(),
                    Told {
                        desired,
                        depth,
                        at: now,
                    },
                );
                out.trigger.push(v.qw.clone());
            }
        }
        if result.is_ok() {
            self.plan_returns(views, now, &mut out);
            if now.saturating_duration_since(self.last_sweep) >= SWEEP_EVERY {
                self.last_sweep = now;
                out.sweep = true;
            }
        }
        let keys: HashSet<&ObjectKey> = views.iter().map(|v| &v.qw).collect();
        self.told.retain(|k, _| keys.contains(k));
        let queues: HashSet<(&ObjectKey, &str)> = views
            .iter()
            .flat_map(|v| v.queries.iter().map(|q| (&v.qw, q.queue.as_str())))
            .collect();
        self.rates
            .retain(|(k, q), _| queues.contains(&(k, q.as_str())));
        self.arrivals.retain(|k, _| keys.contains(k));
        out
    }

    /// One QWorker's reading from its queues' answers: backlogs summed, the seconds per task of
    /// the slowest queue (each learned from its own counters), with a drain target the backlog
    /// weighted by its waiting; the first unreadable queue fails it. A missing answer (cannot
    /// happen) reads as empty.
    fn combine(
        &mut self,
        v: &QueueView,
        depths: &[Result<Depth, QueueError>],
        now: Instant,
    ) -> Result<Depth, QueueError> {
        let mut total = Depth::default();
        let mut done = Some(0u64);
        for (i, q) in v.queries.iter().enumerate() {
            let d = depths.get(i).cloned().unwrap_or(Ok(Depth::default()))?;
            let learned = self
                .rates
                .entry((v.qw.clone(), q.queue.clone()))
                .or_default()
                .observe(d.tally);
            total.queued = total.queued.saturating_add(d.queued);
            total.in_flight = total.in_flight.saturating_add(d.in_flight);
            total.task_millis = total.task_millis.max(learned);
            done = done.zip(d.tally).map(|(n, t)| n.saturating_add(t.tasks));
        }
        let arrivals = self.arrivals.entry(v.qw.clone()).or_default();
        arrivals.observe(now, total.backlog(), done);
        if let (Some(target), Some(secs)) = (
            v.scale.target_drain_seconds.filter(|t| *t >= 1),
            task_seconds(&v.scale, total),
        ) {
            let target = Duration::from_secs(target.unsigned_abs());
            total.due_backlog = Some(arrivals.weighted(now, target, secs));
        }
        Ok(total)
    }

    /// Terminal pods in view go back now; pods that left the view are looked up when due.
    fn plan_returns(&mut self, views: &[QueueView], now: Instant, out: &mut Actions) {
        let mut now_seen = HashMap::new();
        for v in views {
            for pod in &v.terminal {
                if !self.returned.contains(pod) {
                    out.give_back.push(Return {
                        qw: v.qw.clone(),
                        queue: v.queue.clone(),
                        pod: pod.clone(),
                        info: v.info.get(pod).unwrap_or(&v.template).clone(),
                    });
                }
            }
            if let Some(LastSeen {
                queue,
                pods: before,
            }) = self.seen.get(&v.qw)
            {
                for pod in left_view(before.keys(), &v.present) {
                    if !self.returned.contains(pod) {
                        self.departed
                            .entry(pod.clone())
                            .or_insert_with(|| Departed {
                                qw: v.qw.clone(),
                                queue: queue.clone(),
                                info: before.get(pod).cloned().unwrap_or(v.template.clone()),
                                check_at: now,
                                told: false,
                            });
                    }
                }
            }
            now_seen.insert(
                v.qw.clone(),
                LastSeen {
                    queue: v.queue.clone(),
                    pods: v.info.clone(),
                },
            );
        }
        let present: HashSet<&String> = views.iter().flat_map(|v| v.present.iter()).collect();
        // Back in a view (its label put back): the terminal rule covers it again.
        self.departed.retain(|pod, _| !present.contains(pod));
        let mut due: Vec<(String, Departed)> = self
            .departed
            .iter()
            .filter(|(_, d)| d.check_at <= now)
            .map(|(pod, d)| (pod.clone(), d.clone()))
            .collect();
        due.sort_by(|a, b| a.0.cmp(&b.0));
        out.look_up = due;
        // Pods still in view keep their "returned" mark; the rest are done with.
        self.returned.retain(|p| present.contains(p));
        self.seen = now_seen;
    }

    /// An ended pod's list went back.
    pub fn returned(&mut self, pod: &str) {
        self.returned.insert(pod.to_string());
    }

    /// What a look-up of a departed pod found (`Err`: the API did not answer). Returns whether
    /// its list may go back now (then report [`TickState::departed_returned`] on success), and
    /// whether "it still runs" is to be logged.
    pub fn looked_up(&mut self, pod: &str, fate: Result<Fate, ()>, now: Instant) -> LookUp {
        match fate {
            Ok(f) if f.may_return() => LookUp::GiveBack,
            Ok(_) => {
                let Some(d) = self.departed.get_mut(pod) else {
                    return LookUp::Wait { first: false };
                };
                let first = !d.told;
                d.told = true;
                d.check_at = now + SWEEP_EVERY;
                LookUp::Wait { first }
            }
            Err(()) => {
                if let Some(d) = self.departed.get_mut(pod) {
                    d.check_at = now + LOOK_UP_RETRY;
                }
                LookUp::Retry
            }
        }
    }

    /// A departed pod's list went back: it is done with.
    pub fn departed_returned(&mut self, pod: &str) {
        self.departed.remove(pod);
    }

    /// Starts a sweep: what it finds replaces the previous candidates.
    pub fn sweep(&mut self) -> Sweep<'_> {
        Sweep {
            before: std::mem::take(&mut self.orphans),
            state: self,
            next: HashSet::new(),
        }
    }
}

/// What to do about a departed pod after its look-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LookUp {
    /// Gone or ended: return its list.
    GiveBack,
    /// It still runs: look again later (`first`: log it, once).
    Wait { first: bool },
    /// The API did not answer: look again soon.
    Retry,
}

/// One sweep of in-flight lists whose pod the cache does not show. A list is returned only when
/// two sweeps in a row missed its pod and a GET confirms it is gone or ended.
pub(crate) struct Sweep<'a> {
    state: &'a mut TickState,
    before: HashSet<InFlightList>,
    next: HashSet<InFlightList>,
}

impl Sweep<'_> {
    /// The holders of `v`'s queue the broker listed; `alive` are the namespace's pods the cache
    /// shows alive. Returns the pods to look up now (missed by the previous sweep too).
    pub fn owners(
        &mut self,
        v: &QueueView,
        owners: Vec<String>,
        alive: &HashSet<ObjectKey>,
    ) -> Vec<String> {
        let mut look_up = vec![];
        for pod in owners {
            if !pod.starts_with(&v.prefix) || alive.contains(&ObjectKey::new(&v.qw.namespace, &pod))
            {
                continue;
            }
            let k = InFlightList {
                queue: v.queue.clone(),
                pod: pod.clone(),
            };
            if self.before.contains(&k) {
                look_up.push(pod);
            } else {
                self.next.insert(k);
            }
        }
        look_up
    }

    /// A look-up failed: the list stays a candidate.
    pub fn unresolved(&mut self, queue: &str, pod: &str) {
        self.next.insert(InFlightList {
            queue: queue.to_string(),
            pod: pod.to_string(),
        });
    }
}

impl Drop for Sweep<'_> {
    fn drop(&mut self) {
        self.state.orphans = std::mem::take(&mut self.next);
    }
}

/// Pods of `before` that are not in `now`: they left the view since the last tick.
fn left_view<'a>(
    before: impl IntoIterator<Item = &'a String>,
    now: &HashSet<String>,
) -> Vec<&'a String> {
    let mut out: Vec<&String> = before.into_iter().filter(|p| !now.contains(*p)).collect();
    out.sort();
    out
}

/// The namespace's pods the cache shows alive.
pub(crate) fn alive_pods(pods: &[Arc<Pod>]) -> HashSet<ObjectKey> {
    pods.iter()
        .map(|p| WorkerPod::read(p))
        .filter(|w| w.phase.is_alive() && !w.name.is_empty())
        .map(|w| ObjectKey::new(w.namespace, w.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qworker() -> QWorker {
        let mut qw = QWorker::new(
            "w",
            serde_json::from_value(serde_json::json!({
                "podSpec": {"containers": [{"name": "c", "image": "i",
                    "args": ["--task", "--max-retries", "2", "--", "x"]}]},
                "scaleConfig": {"scalerConfigRef": "s", "queue": "q", "maxReplicas": 5}
            }))
            .unwrap(),
        );
        qw.metadata.namespace = Some("ns".into());
        qw.metadata.uid = Some("u1".into());
        qw
    }

    fn pod(name: &str, phase: &str, owned: bool) -> Arc<Pod> {
        let owners = if owned {
            serde_json::json!([{"apiVersion": "v", "kind": "QWorker", "name": "w", "uid": "u1", "controller": true}])
        } else {
            serde_json::json!([])
        };
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns",
                    "labels": {qscaler_crds::names::LABEL_QWORKER: "w"}, "ownerReferences": owners},
                "spec": {"containers": [{"name": "c", "args": ["--task", "--max-retries", "1", "--", "x"]}]},
                "status": {"phase": phase}
            }))
            .unwrap(),
        )
    }

    fn ok(depths: &[u64]) -> DepthsResult {
        Ok(depths
            .iter()
            .map(|q| {
                Ok(Depth {
                    queued: *q,
                    ..Depth::default()
                })
            })
            .collect())
    }

    #[test]
    fn only_owned_pods_are_in_view_and_only_alive_ones_are_consumers() {
        let v = QueueView::of(
            &qworker(),
            &[
                pod("w-a", "Running", true),
                pod("w-b", "Failed", true),
                pod("w-c", "Running", false),
            ],
        );
        assert_eq!(v.queries.len(), 1);
        assert_eq!(v.queries[0].consumers, vec!["ns/w-a"]);
        assert_eq!(v.terminal, vec!["w-b"]);
        assert_eq!(v.present.len(), 2);
        assert_eq!(v.info["w-b"].max_retries, 1);
        assert_eq!(v.template.max_retries, 2);
    }

    #[test]
    fn several_queues_sum_and_plan_with_the_slowest_learned_task_time() {
        let mut qw = qworker();
        let sc = &mut qw.spec.scale_config;
        sc.queue = String::new();
        sc.queues = ["a", "b"]
            .map(|name| qscaler_crds::qworker::QueueRef { name: name.into() })
            .to_vec();
        sc.target_drain_seconds = Some(10);
        sc.max_replicas = 10;
        let other = qworker();
        let views = [QueueView::of(&qw, &[]), QueueView::of(&other, &[])];
        assert_eq!(views[0].queries.len(), 2);
        assert_eq!(views[0].queries[1].queue, "b");
        let timed = |queued, tasks, millis| {
            Ok(Depth {
                queued,
                in_flight: 1,
                tally: Some(crate::broker::TaskTally { tasks, millis }),
                ..Depth::default()
            })
        };
        let t0 = Instant::now();
        let mut s = TickState::new(t0);
        let answers = Ok(vec![
            timed(10, 5, 5_000),
            timed(20, 5, 10_000),
            Ok(Depth {
                queued: 7,
                ..Depth::default()
            }),
        ]);
        let a = s.tick(&views, &answers, t0);
        let got = |i: usize| a.readings[i].1.result.clone();
        assert_eq!(
            got(0),
            Ok(Depth {
                queued: 30,
                in_flight: 2,
                tally: None,
                task_millis: Some(2000),
                due_backlog: Some(32),
            })
        );
        assert_eq!(got(1).map(|d| d.queued), Ok(7), "the next QWorker's answer");
        // 32 tasks × 2 s within 10 s.
        assert_eq!(wanted(&views[0].scale, got(0).unwrap()), 7);
        // One queue unreadable: the QWorker's reading fails.
        let bad = Ok(vec![
            timed(10, 5, 5_000),
            Err(QueueError("wrong type".into())),
            Ok(Depth::default()),
        ]);
        let a = s.tick(&views, &bad, t0);
        assert!(matches!(a.readings[0].1.result, Err(ReadError::Queue(_))));
        assert!(a.readings[1].1.result.is_ok());
    }

    #[test]
    fn a_reading_triggers_when_desired_changes_and_an_outage_reads_as_broker_error() {
        let qw = qworker();
        let views = [QueueView::of(&qw, &[])];
        let t0 = Instant::now();
        let mut s = TickState::new(t0);
        let a = s.tick(&views, &ok(&[3]), t0);
        assert_eq!(a.trigger, vec![ObjectKey::of(&qw)]);
        assert!(a.health.as_ref().is_some_and(|h| h.ok));
        assert_eq!(
            a.readings[0].1.result,
            Ok(Depth {
                queued: 3,
                ..Depth::default()
            })
        );
        // Same desired, depth unchanged: no reconcile.
        let a = s.tick(&views, &ok(&[3]), t0 + Duration::from_secs(1));
        assert!(a.trigger.is_empty());
        let a = s.tick(
            &views,
            &Err(BrokerError::Auth("WRONGPASS".into())),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(a.trigger.len(), 1, "reachability changed");
        let h = a.health.unwrap();
        assert!(!h.ok && h.auth_failed);
        assert!(matches!(a.readings[0].1.result, Err(ReadError::Broker(_))));
        assert!(
            a.give_back.is_empty() && !a.sweep,
            "no task work while the broker is down"
        );
    }

    #[test]
    fn an_unreadable_queue_is_reported_once_per_outage() {
        let views = [QueueView::of(&qworker(), &[])];
        let t0 = Instant::now();
        let mut s = TickState::new(t0);
        let bad: DepthsResult = Ok(vec![Err(QueueError("wrong type".into()))]);
        assert_eq!(s.tick(&views, &bad, t0).unreadable.len(), 1);
        assert!(s.tick(&views, &bad, t0).unreadable.is_empty());
        s.tick(&views, &ok(&[1]), t0);
        assert_eq!(s.tick(&views, &bad, t0).unreadable.len(), 1);
    }

    #[test]
    fn an_ended_pod_is_returned_once_with_its_own_retry_limit() {
        let qw = qworker();
        let t0 = Instant::now();
        let mut s = TickState::new(t0);
        let views = [QueueView::of(&qw, &[pod("w-a", "Failed", true)])];
        let a = s.tick(&views, &ok(&[0]), t0);
        assert_eq!(a.give_back.len(), 1);
        assert_eq!(
            (a.give_back[0].pod.as_str(), a.give_back[0].info.max_retries),
            ("w-a", 1)
        );
        // Failed to return: tried again next tick.
        assert_eq!(s.tick(&views, &ok(&[0]), t0).give_back.len(), 1);
        s.returned("w-a");
        assert!(s.tick(&views, &ok(&[0]), t0).give_back.is_empty());
        // Gone from the cache after its return: nothing more to do.
        let a = s.tick(&[QueueView::of(&qw, &[])], &ok(&[0]), t0);
        assert!(a.give_back.is_empty() && a.look_up.is_empty());
    }

    #[test]
    fn a_pod_that_left_the_view_is_returned_only_once_the_api_says_it_ended() {
        let qw = qworker();
        let t0 = Instant::now();
        let mut s = TickState::new(t0);
        s.tick(
            &[QueueView::of(&qw, &[pod("w-a", "Running", true)])],
            &ok(&[0]),
            t0,
        );
        // Its owner reference removed (an orphaning delete): out of view, still running.
        let orphaned = [QueueView::of(&qw, &[pod("w-a", "Running", false)])];
        let a = s.tick(&orphaned, &ok(&[0]), t0);
        assert_eq!(a.look_up.len(), 1);
        assert_eq!(
            a.look_up[0].1.info.max_retries, 1,
            "what the pod itself said"
        );
        assert_eq!(
            s.looked_up("w-a", Ok(Fate::Alive), t0),
            LookUp::Wait { first: true }
        );
        // Not due again before SWEEP_EVERY.
        assert!(s
            .tick(&orphaned, &ok(&[0]), t0 + Duration::from_secs(1))
            .look_up
            .is_empty());
        let later = t0 + SWEEP_EVERY;
        let a = s.tick(&orphaned, &ok(&[0]), later);
        assert_eq!(a.look_up.len(), 1);
        assert_eq!(
            s.looked_up("w-a", Ok(Fate::Alive), later),
            LookUp::Wait { first: false }
        );
        let a = s.tick(&orphaned, &ok(&[0]), later + SWEEP_EVERY);
        assert_eq!(
            s.looked_up(&a.look_up[0].0, Err(()), later + SWEEP_EVERY),
            LookUp::Retry
        );
        let a = s.tick(&orphaned, &ok(&[0]), later + SWEEP_EVERY + LOOK_UP_RETRY);
        assert_eq!(
            s.looked_up(&a.look_up[0].0, Ok(Fate::Gone), later),
            LookUp::GiveBack
        );
        s.departed_returned("w-a");
        assert!(s
            .tick(&orphaned, &ok(&[0]), later + SWEEP_EVERY * 9)
            .look_up
            .is_empty());
    }

    #[test]
    fn a_pod_back_in_view_is_not_looked_up() {
        let qw = qworker();
        let t0 = Instant::now();
        let mut s = TickState::new(t0);
        s.tick(
            &[QueueView::of(&qw, &[pod("w-a", "Running", true)])],
            &ok(&[0]),
            t0,
        );
        s.tick(&[QueueView::of(&qw, &[])], &ok(&[0]), t0);
        let a = s.tick(
            &[QueueView::of(&qw, &[pod("w-a", "Running", true)])],
            &ok(&[0]),
            t0,
        );
        assert!(a.look_up.is_empty());
    }

    #[test]
    fn the_sweep_looks_up_a_list_only_after_two_sweeps_missed_its_pod() {
        let qw = qworker();
        let v = QueueView::of(&qw, &[pod("w-live", "Running", true)]);
        let alive = alive_pods(&[pod("w-live", "Running", true)]);
        let owners = || vec!["w-live".into(), "w-lost".into(), "other-x".into()];
        let t0 = Instant::now();
        let mut s = TickState::new(t0);
        assert!(s.sweep().owners(&v, owners(), &alive).is_empty());
        assert_eq!(s.sweep().owners(&v, owners(), &alive), vec!["w-lost"]);
        // Looked up and found running (or returned): not a candidate any more.
        assert!(s.sweep().owners(&v, owners(), &alive).is_empty());
        // A failed look-up keeps it a candidate.
        let mut sw = s.sweep();
        assert_eq!(sw.owners(&v, owners(), &alive), vec!["w-lost"]);
        sw.unresolved("q", "w-lost");
        drop(sw);
        assert_eq!(s.sweep().owners(&v, owners(), &alive), vec!["w-lost"]);
    }

    #[test]
    fn the_sweep_is_due_every_sweep_interval_while_the_broker_answers() {
        let views = [QueueView::of(&qworker(), &[])];
        let t0 = Instant::now();
        let mut s = TickState::new(t0);
        assert!(!s.tick(&views, &ok(&[0]), t0 + Duration::from_secs(9)).sweep);
        assert!(s.tick(&views, &ok(&[0]), t0 + SWEEP_EVERY).sweep);
        assert!(!s.tick(&views, &ok(&[0]), t0 + SWEEP_EVERY).sweep);
    }

    #[test]
    fn triggers_on_desired_change_only_or_slow_depth_refresh() {
        let t0 = Instant::now();
        let d = |q| {
            Some(Depth {
                queued: q,
                ..Depth::default()
            })
        };
        assert!(should_trigger(None, Some(1), d(1), t0));
        let told = Told {
            desired: Some(1),
            depth: d(1),
            at: t0,
        };
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(!should_trigger(Some(&told), Some(1), d(1), at(60_000)));
        assert!(!should_trigger(Some(&told), Some(1), d(2), at(1000)));
        assert!(should_trigger(
            Some(&told),
            Some(1),
            d(2),
            t0 + STATUS_REFRESH
        ));
        assert!(should_trigger(Some(&told), Some(2), d(2), at(1)));
        assert!(should_trigger(Some(&told), None, None, at(1)));
    }

    #[test]
    fn pods_that_left_the_view() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<String>>();
        let before = set(&["a", "b", "c"]);
        assert_eq!(left_view(&before, &set(&["b", "d"])), vec!["a", "c"]);
        assert!(left_view(&before, &before).is_empty());
    }
}
