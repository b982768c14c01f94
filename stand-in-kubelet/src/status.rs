//! Pod status as plain data and the kubelet's rules: phase from container states, restart policy,
//! crash-loop backoff, termination reasons. No I/O here.

use std::time::Duration;

use qscaler_crds::quantity;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The node's (and every pod's) address.
pub const LOOPBACK: &str = "127.0.0.1";

/// A container run that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Termination {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

/// Where a container is now.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Termination),
}

/// What the kubelet knows of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRecord {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last: Option<Termination>,
    pub restart_count: i32,
}

impl ContainerRecord {
    pub fn new(name: &str, image: &str) -> Self {
        ContainerRecord {
            name: name.to_string(),
            image: image.to_string(),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last: None,
            restart_count: 0,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }
}

/// `spec.restartPolicy` (default Always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `exit_code` is started again.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// The pod phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s? {
            "Pending" => Some(Phase::Pending),
            "Running" => Some(Phase::Running),
            "Succeeded" => Some(Phase::Succeeded),
            "Failed" => Some(Phase::Failed),
            _ => None,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// Progress of the init containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Still running (or none started yet).
    Pending,
    /// All succeeded (or there are none).
    Done,
    /// One failed and will not be retried.
    Failed,
}

/// The kubelet's `getPhase`: the pod phase from its containers' states and the restart policy.
pub fn phase(init: Init, containers: &[ContainerRecord], policy: RestartPolicy) -> Phase {
    match init {
        Init::Failed => return Phase::Failed,
        Init::Pending => return Phase::Pending,
        Init::Done => {}
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } => match &c.last {
                Some(t) => {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                None => waiting += 1,
            },
        }
    }
    if waiting > 0 || containers.is_empty() {
        Phase::Pending
    } else if running > 0 || policy == RestartPolicy::Always {
        // Running, or all stopped and restarting.
        Phase::Running
    } else if stopped == succeeded {
        Phase::Succeeded
    } else if policy == RestartPolicy::Never {
        Phase::Failed
    } else {
        Phase::Running
    }
}

/// Crash-loop backoff before restart number `restarts` (1-based): 1 s doubling to 30 s.
pub fn backoff(restarts: i32) -> Duration {
    let exp = restarts.saturating_sub(1).clamp(0, 5) as u32;
    Duration::from_secs((1u64 << exp).min(30))
}

/// The terminated reason a container runtime reports.
pub fn termination_reason(exit_code: i32, oom_killed: bool) -> &'static str {
    if oom_killed && exit_code != 0 {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// The pod's QoS class from its containers' cpu/memory requests and limits.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let res = c.resources.as_ref();
        let limits = res.and_then(|r| r.limits.as_ref());
        let requests = res.and_then(|r| r.requests.as_ref());
        for name in ["cpu", "memory"] {
            let amount = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| match name {
                "cpu" => quantity::cpu_millis(&q.0),
                _ => quantity::bytes(&q.0),
            };
            let limit = limits.and_then(|l| l.get(name)).and_then(amount);
            // An unset request defaults to the limit.
            let request = requests
                .and_then(|r| r.get(name))
                .and_then(amount)
                .or(limit);
            any |= limit.is_some() || request.is_some();
            guaranteed &= limit.is_some() && request == limit;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn terminated(t: &Termination) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: Some(time(t.started_at)),
        finished_at: Some(time(t.finished_at)),
        ..Default::default()
    }
}

/// The API's ContainerStatus of a record.
pub fn container_status(r: &ContainerRecord) -> ContainerStatus {
    let state = match &r.state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..Default::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(terminated(t)),
            ..Default::default()
        },
    };
    ContainerStatus {
        name: r.name.clone(),
        image: r.image.clone(),
        image_id: format!("qscaler-local://{}", r.image),
        container_id: None,
        ready: r.is_running(),
        started: Some(r.is_running()),
        restart_count: r.restart_count,
        state: Some(state),
        last_state: r.last.as_ref().map(|t| ContainerState {
            terminated: Some(terminated(t)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Everything the pod's status is computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView<'a> {
    pub phase: Phase,
    pub init: Init,
    pub init_containers: &'a [ContainerRecord],
    pub containers: &'a [ContainerRecord],
    pub start_time: Timestamp,
    pub qos_class: &'static str,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// The pod's conditions, keeping `lastTransitionTime` of those whose status did not change.
pub fn conditions(view: &PodView, previous: &[PodCondition], now: Timestamp) -> Vec<PodCondition> {
    let ready = view.phase == Phase::Running && view.containers.iter().all(|c| c.is_running());
    let initialized = view.init == Init::Done;
    let want = [
        ("PodScheduled", true, None),
        (
            "Initialized",
            initialized,
            (!initialized).then_some("ContainersNotInitialized"),
        ),
        (
            "ContainersReady",
            ready,
            (!ready).then_some("ContainersNotReady"),
        ),
        ("Ready", ready, (!ready).then_some("ContainersNotReady")),
    ];
    want.iter()
        .map(|(ty, ok, reason)| {
            let status = if *ok { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == *ty && c.status == status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(time(now));
            PodCondition {
                type_: ty.to_string(),
                status: status.to_string(),
                reason: reason.map(String::from),
                last_transition_time: Some(since),
                ..Default::default()
            }
        })
        .collect()
}

/// The whole PodStatus.
pub fn pod_status(view: &PodView, previous: &[PodCondition], now: Timestamp) -> PodStatus {
    PodStatus {
        phase: Some(view.phase.as_str().to_string()),
        conditions: Some(conditions(view, previous, now)),
        host_ip: Some(LOOPBACK.into()),
        pod_ip: Some(LOOPBACK.into()),
        pod_ips: Some(vec![PodIP {
            ip: LOOPBACK.into(),
        }]),
        start_time: Some(time(view.start_time)),
        container_statuses: Some(view.containers.iter().map(container_status).collect()),
        init_container_statuses: (!view.init_containers.is_empty())
            .then(|| view.init_containers.iter().map(container_status).collect()),
        qos_class: Some(view.qos_class.into()),
        reason: view.reason.clone(),
        message: view.message.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn t0() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
    }

    fn term(code: i32) -> Termination {
        Termination {
            exit_code: code,
            reason: termination_reason(code, false).into(),
            message: None,
            started_at: t0(),
            finished_at: t0(),
        }
    }

    fn rec(state: State, last: Option<Termination>) -> ContainerRecord {
        ContainerRecord {
            name: "c".into(),
            image: "busybox".into(),
            state,
            last,
            restart_count: 0,
        }
    }

    fn waiting() -> State {
        State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        }
    }

    #[test]
    fn phase_follows_the_kubelet_rules() {
        use RestartPolicy::*;
        let running = rec(State::Running { started_at: t0() }, None);
        let ok = rec(State::Terminated(term(0)), None);
        let bad = rec(State::Terminated(term(3)), None);
        let new = rec(waiting(), None);
        let looping = rec(waiting(), Some(term(1)));
        let cases: &[(&[ContainerRecord], RestartPolicy, Phase)] = &[
            (&[], Never, Phase::Pending),
            (std::slice::from_ref(&new), Never, Phase::Pending),
            (&[new.clone(), running.clone()], Always, Phase::Pending),
            (std::slice::from_ref(&running), Never, Phase::Running),
            (&[running.clone(), bad.clone()], Never, Phase::Running),
            (std::slice::from_ref(&ok), Never, Phase::Succeeded),
            (std::slice::from_ref(&ok), OnFailure, Phase::Succeeded),
            (std::slice::from_ref(&ok), Always, Phase::Running),
            (std::slice::from_ref(&bad), Never, Phase::Failed),
            (&[ok.clone(), bad.clone()], Never, Phase::Failed),
            (std::slice::from_ref(&bad), OnFailure, Phase::Running),
            (std::slice::from_ref(&looping), OnFailure, Phase::Running),
            (std::slice::from_ref(&looping), Always, Phase::Running),
        ];
        for (containers, policy, want) in cases {
            assert_eq!(
                phase(Init::Done, containers, *policy),
                *want,
                "{containers:?} {policy:?}"
            );
        }
        assert_eq!(
            phase(Init::Pending, std::slice::from_ref(&running), Never),
            Phase::Pending
        );
        assert_eq!(
            phase(Init::Failed, std::slice::from_ref(&running), Never),
            Phase::Failed
        );
    }

    #[test]
    fn qos_classes() {
        let spec = |resources: Value| -> PodSpec {
            serde_json::from_value(json!({"containers": [{"name": "c", "resources": resources}]}))
                .expect("PodSpec")
        };
        assert_eq!(qos_class(&spec(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&spec(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&spec(json!({"limits": {"cpu": "1", "memory": "1Gi"},
                                   "requests": {"cpu": "1000m", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&spec(json!({"limits": {"memory": "1Gi"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&spec(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
    }

    #[test]
    fn restart_policies() {
        assert!(RestartPolicy::Always.restarts(0));
        assert!(RestartPolicy::Always.restarts(1));
        assert!(!RestartPolicy::OnFailure.restarts(0));
        assert!(RestartPolicy::OnFailure.restarts(137));
        assert!(!RestartPolicy::Never.restarts(1));
        assert_eq!(RestartPolicy::parse(None), RestartPolicy::Always);
        assert_eq!(
            RestartPolicy::parse(Some("OnFailure")),
            RestartPolicy::OnFailure
        );
    }

    #[test]
    fn backoff_doubles_from_one_to_thirty_seconds() {
        let secs: Vec<u64> = (0..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn termination_reasons() {
        assert_eq!(termination_reason(0, false), "Completed");
        assert_eq!(termination_reason(3, false), "Error");
        assert_eq!(termination_reason(137, true), "OOMKilled");
        assert_eq!(termination_reason(0, true), "Completed");
    }

    #[test]
    fn conditions_keep_transition_times_and_track_readiness() {
        let running = [rec(State::Running { started_at: t0() }, None)];
        let view = PodView {
            phase: Phase::Running,
            init: Init::Done,
            init_containers: &[],
            containers: &running,
            start_time: t0(),
            qos_class: "BestEffort",
            reason: None,
            message: None,
        };
        let first = conditions(&view, &[], t0());
        assert!(first.iter().all(|c| c.status == "True"));
        let later = Timestamp::from_second(1_700_000_100).expect("valid");
        let again = conditions(&view, &first, later);
        assert_eq!(
            first, again,
            "unchanged conditions keep their transition time"
        );

        let done = [rec(State::Terminated(term(0)), None)];
        let view = PodView {
            phase: Phase::Succeeded,
            containers: &done,
            ..view
        };
        let after = conditions(&view, &first, later);
        let ready = after.iter().find(|c| c.type_ == "Ready").expect("Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.last_transition_time, Some(Time(later)));
    }

    #[test]
    fn container_status_reports_exit_code_and_last_state() {
        let mut r = rec(waiting(), Some(term(3)));
        r.restart_count = 2;
        let s = container_status(&r);
        assert!(!s.ready);
        assert_eq!(s.restart_count, 2);
        let last = s.last_state.and_then(|l| l.terminated).expect("last state");
        assert_eq!(last.exit_code, 3);
        assert_eq!(last.reason.as_deref(), Some("Error"));
    }
}
