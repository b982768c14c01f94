//! What `timeline` records: the QWorker's counts and each pod's state once per interval, and the
//! Events on the QWorker. Built from API objects by pure functions; saved as JSON with
//! `--save-samples` so a picture can be drawn again without a cluster.

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use qscaler_crds::names::{ANNOTATION_ACTIVITY, ANNOTATION_DRAIN, LABEL_QWORKER};
use qscaler_crds::QWorker;
use serde::{Deserialize, Serialize};

/// One recording of one QWorker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    pub namespace: String,
    pub qworker: String,
    /// When the first sample was taken (RFC 3339, UTC); times below are seconds after it.
    pub started: String,
    pub samples: Vec<Sample>,
    pub events: Vec<Marker>,
}

/// The QWorker and its pods at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Seconds since [`Recording::started`].
    pub t: f64,
    /// Tasks waiting; `None` until the operator has read the queue.
    pub queue: Option<i64>,
    pub in_flight: Option<i64>,
    pub desired: i32,
    pub current: i32,
    pub draining: i32,
    /// Every pod of the QWorker that exists at `t`, finished ones included.
    pub pods: Vec<PodSample>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSample {
    pub name: String,
    pub state: PodState,
}

/// A worker pod's state as the picture colours it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PodState {
    /// Not running yet (scheduling, image pull, container start).
    Pending,
    /// Running, the worker has not said whether it is busy.
    Running,
    /// Running and waiting for a task.
    Idle,
    /// Running a task.
    Busy,
    /// Told to drain (or being deleted): finishing its task, then gone.
    Draining,
    /// Succeeded or Failed, not deleted yet.
    Ended,
}

impl PodState {
    pub const ALL: [PodState; 6] = [
        PodState::Pending,
        PodState::Running,
        PodState::Idle,
        PodState::Busy,
        PodState::Draining,
        PodState::Ended,
    ];

    /// The word used in the legend, the SVG classes and tooltips.
    pub fn as_str(self) -> &'static str {
        match self {
            PodState::Pending => "pending",
            PodState::Running => "running",
            PodState::Idle => "idle",
            PodState::Busy => "busy",
            PodState::Draining => "draining",
            PodState::Ended => "ended",
        }
    }
}

/// An Event on the QWorker (scaled up/down, draining, ...), placed on the time axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    /// Seconds since [`Recording::started`], from the Event's own time.
    pub t: f64,
    pub reason: String,
    pub note: String,
    /// `Warning` Events are drawn in red.
    pub warning: bool,
    /// Which occurrence of a repeated Event this is (0 or 1: the first). kube's event recorder
    /// keeps the first note for the repeats (its key leaves the note out), so a repeat's note may
    /// be stale: "scaled down from 2 to 1" again when it scaled from 1 to 0.
    #[serde(default)]
    pub occurrence: i32,
}

/// The state of one pod; what its drain annotation, deletion, phase and activity say.
pub fn pod_state(pod: &Pod) -> PodState {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed") {
        return PodState::Ended;
    }
    let annotations = pod.metadata.annotations.as_ref();
    if pod.metadata.deletion_timestamp.is_some()
        || annotations.is_some_and(|a| a.contains_key(ANNOTATION_DRAIN))
    {
        return PodState::Draining;
    }
    if phase != "Running" {
        return PodState::Pending;
    }
    match annotations
        .and_then(|a| a.get(ANNOTATION_ACTIVITY))
        .map(String::as_str)
    {
        Some("busy") => PodState::Busy,
        Some("idle") => PodState::Idle,
        _ => PodState::Running,
    }
}

/// One sample at `t` seconds: the QWorker's status counts and the states of its pods (pods of
/// other QWorkers left out), sorted by name.
pub fn observe(t: f64, qw: &QWorker, pods: &[Pod]) -> Sample {
    let status = qw.status.clone().unwrap_or_default();
    let name = qw.metadata.name.as_deref();
    let mut pods: Vec<PodSample> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_QWORKER))
                .map(String::as_str)
                == name
        })
        .map(|p| PodSample {
            name: p.metadata.name.clone().unwrap_or_default(),
            state: pod_state(p),
        })
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    Sample {
        t,
        queue: status.queue_depth,
        in_flight: status.in_flight,
        desired: status.desired_replicas,
        current: status.current_replicas,
        draining: status.draining_replicas,
        pods,
    }
}

/// When an Event (last) happened: a repeated Event (a series) at its last occurrence, else its
/// own time, else the deprecated timestamps older clients write.
pub fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
}

/// How many times an Event has happened (1 unless it is a series).
pub fn occurrences(event: &Event) -> i32 {
    event
        .series
        .as_ref()
        .and_then(|s| s.count)
        .or(event.count)
        .unwrap_or(1)
}

/// The marker of an Event on the QWorker `started` seconds into the recording; `None` for an
/// Event about something else, or one that happened before the recording began.
pub fn marker(started: Timestamp, qworker: &str, event: &Event) -> Option<Marker> {
    let about = &event.involved_object;
    if about.kind.as_deref() != Some("QWorker") || about.name.as_deref() != Some(qworker) {
        return None;
    }
    let at = event_time(event)?;
    let t = at.duration_since(started).as_secs_f64();
    (t >= 0.0).then(|| Marker {
        t,
        reason: event.reason.clone().unwrap_or_default(),
        note: event.message.clone().unwrap_or_default(),
        warning: event.type_.as_deref() == Some("Warning"),
        occurrence: occurrences(event),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pod, qworker};
    use k8s_openapi::api::core::v1::{EventSeries, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

    #[test]
    fn a_pods_state_follows_drain_deletion_phase_and_activity() {
        let qw = qworker("mail").build();
        let cases = [
            (pod(&qw, "p").phase("Pending").build(), PodState::Pending),
            (pod(&qw, "p").build(), PodState::Running),
            (pod(&qw, "p").activity("busy").build(), PodState::Busy),
            (pod(&qw, "p").activity("idle").build(), PodState::Idle),
            (
                pod(&qw, "p")
                    .activity("busy")
                    .draining("scale-down")
                    .build(),
                PodState::Draining,
            ),
            (
                pod(&qw, "p")
                    .phase("Succeeded")
                    .draining("scale-down")
                    .build(),
                PodState::Ended,
            ),
            (pod(&qw, "p").phase("Failed").build(), PodState::Ended),
        ];
        for (p, state) in cases {
            assert_eq!(pod_state(&p), state, "{:?}", p.metadata.annotations);
        }
        let mut deleted = pod(&qw, "p").activity("busy").build();
        deleted.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert_eq!(pod_state(&deleted), PodState::Draining);
    }

    #[test]
    fn a_sample_holds_the_counts_and_only_this_qworkers_pods() {
        let qw = qworker("mail")
            .status(|s| {
                s.queue_depth = Some(7);
                s.in_flight = Some(2);
                s.desired_replicas = 3;
                s.current_replicas = 2;
                s.draining_replicas = 1;
            })
            .build();
        let other = qworker("other").build();
        let pods = [
            pod(&qw, "mail-b").activity("busy").build(),
            pod(&other, "other-a").build(),
            pod(&qw, "mail-a").phase("Pending").build(),
        ];
        let s = observe(2.5, &qw, &pods);
        assert_eq!(
            (s.t, s.queue, s.in_flight, s.desired, s.current, s.draining),
            (2.5, Some(7), Some(2), 3, 2, 1)
        );
        let names: Vec<(&str, PodState)> =
            s.pods.iter().map(|p| (p.name.as_str(), p.state)).collect();
        assert_eq!(
            names,
            vec![("mail-a", PodState::Pending), ("mail-b", PodState::Busy)]
        );
    }

    fn event(kind: &str, name: &str, at: &str, series_at: Option<&str>) -> Event {
        Event {
            involved_object: ObjectReference {
                kind: Some(kind.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            reason: Some("ScaledUp".into()),
            message: Some("scaled up from 0 to 2 workers".into()),
            type_: Some("Normal".into()),
            event_time: Some(MicroTime(at.parse().unwrap())),
            series: series_at.map(|s| EventSeries {
                count: Some(3),
                last_observed_time: Some(MicroTime(s.parse().unwrap())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn events_become_markers_at_their_own_time() {
        let start: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let m = marker(
            start,
            "mail",
            &event("QWorker", "mail", "2026-12-01T10:00:04.5Z", None),
        )
        .expect("a marker");
        assert_eq!(m.t, 4.5);
        assert_eq!(m.reason, "ScaledUp");
        assert!(!m.warning);
        // A series is placed at its last occurrence.
        let e = event(
            "QWorker",
            "mail",
            "2026-12-01T10:00:01Z",
            Some("2026-12-01T10:00:09Z"),
        );
        assert_eq!(
            marker(start, "mail", &e).map(|m| (m.t, m.occurrence)),
            Some((9.0, 3))
        );
        assert_eq!(occurrences(&e), 3);
        // Before the recording, about a pod, about another QWorker: no marker.
        for e in [
            event("QWorker", "mail", "2026-12-01T09:59:59Z", None),
            event("Pod", "mail", "2026-12-01T10:00:02Z", None),
            event("QWorker", "other", "2026-12-01T10:00:02Z", None),
        ] {
            assert_eq!(marker(start, "mail", &e), None);
        }
    }

    #[test]
    fn a_recording_reads_back_what_it_wrote() {
        let r = Recording {
            namespace: "ns".into(),
            qworker: "mail".into(),
            started: "2026-12-01T10:00:00Z".into(),
            samples: vec![Sample {
                t: 1.0,
                queue: Some(3),
                pods: vec![PodSample {
                    name: "mail-a".into(),
                    state: PodState::Busy,
                }],
                ..Default::default()
            }],
            events: vec![Marker {
                t: 0.5,
                reason: "ScaledUp".into(),
                note: "n".into(),
                warning: false,
                occurrence: 1,
            }],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"inFlight\":null"), "{text}");
        assert!(text.contains("\"state\":\"busy\""), "{text}");
        assert_eq!(serde_json::from_str::<Recording>(&text).unwrap(), r);
    }
}
