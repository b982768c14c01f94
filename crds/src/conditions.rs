//! Condition types and reasons of `QWorker.status.conditions` and `ScalerConfig.status.conditions`.
//! The operator writes them; `kubectl qworker rollout status` and users read them.

/// The QWorker runs at least the desired number of available, up-to-date workers.
pub const READY: &str = "Ready";
/// The spec passed validation. False with reason [`reason::INVALID_SPEC`] and every problem in the message.
pub const SPEC_VALID: &str = "SpecValid";
/// The queue depth could be read. False: replicas are held where they are (never scaled down on missing data).
pub const SCALER_HEALTHY: &str = "ScalerHealthy";
/// A rollout is under way (reason [`reason::ROLLING_OUT`]) or finished (reason [`reason::ROLLOUT_COMPLETE`]).
pub const PROGRESSING: &str = "Progressing";
/// Workers keep failing; replacements are created with backoff.
pub const WORKERS_CRASHING: &str = "WorkersCrashing";

/// Scaling and rollout are paused (`spec.paused` or the `quickube.com/paused` annotation).
/// True with reason [`reason::PAUSED`]; False with [`reason::RESUMED`] once a pause ended.
pub const PAUSED: &str = "Paused";
/// A control keeps the count from what the queue asks, or cut this reconcile's plan: the reason
/// names it (Paused, BelowActivation, FallbackReplicas, KeepWarm, MaxPodsAddedPerStep,
/// MaxDrainsPerMinute); False with [`reason::NOT_LIMITED`] once none does.
pub const SCALE_LIMITED: &str = "ScaleLimited";

/// ScalerConfig: deleted, but QWorkers still use it; it keeps working until they are gone
/// (reason [`reason::QWORKERS_REMAIN`], the QWorkers named in the message).
pub const DELETING: &str = "Deleting";

pub mod reason {
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const VALID: &str = "Valid";
    pub const SCALER_CONFIG_NOT_FOUND: &str = "ScalerConfigNotFound";
    pub const BROKER_UNREACHABLE: &str = "BrokerUnreachable";
    pub const QUEUE_READ: &str = "QueueRead";
    /// The broker answered but this QWorker's queue could not be read (e.g. its key is not a list).
    pub const QUEUE_UNREADABLE: &str = "QueueUnreadable";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    pub const CRASH_LOOP: &str = "CrashLoop";
    pub const WORKERS_HEALTHY: &str = "WorkersHealthy";
    pub const SCALED: &str = "Scaled";
    pub const SCALING: &str = "Scaling";
    pub const CONNECTED: &str = "Connected";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const QWORKERS_REMAIN: &str = "QWorkersRemain";
    pub const PAUSED: &str = "Paused";
    pub const RESUMED: &str = "Resumed";
    pub const BELOW_ACTIVATION: &str = "BelowActivation";
    pub const FALLBACK_REPLICAS: &str = "FallbackReplicas";
    pub const KEEP_WARM: &str = "KeepWarm";
    pub const MAX_PODS_ADDED_PER_STEP: &str = "MaxPodsAddedPerStep";
    pub const MAX_DRAINS_PER_MINUTE: &str = "MaxDrainsPerMinute";
    pub const NOT_LIMITED: &str = "NotLimited";
}
