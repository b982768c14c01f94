//! Setting a status condition the Kubernetes way: `lastTransitionTime` changes only when the status
//! flips, so "since when" stays true and an unchanged condition never dirties the status. A message
//! is never empty (an empty one becomes the reason).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use qscaler_crds::conditions::{self as cond, reason};

/// Sets (or adds) condition `type_`. Returns whether anything changed.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) -> bool {
    let status = if status { "True" } else { "False" }.to_string();
    let mut message = message.into();
    if message.is_empty() {
        // The local 1.20 apiserver turns "" into null and then rejects it as not a string; a
        // message is more useful anyway.
        message = reason.to_string();
    }
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let before = c.clone();
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
            *c != before
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status,
                reason: reason.to_string(),
                message,
                observed_generation: generation,
                last_transition_time: now.clone(),
            });
            true
        }
    }
}

/// The status of condition `type_`, if present.
/// Sets `SpecValid`, the same way for QWorkers and ScalerConfigs: `problems` (the validation
/// summary) or none. Returns whether anything changed.
pub fn set_spec_valid(
    conditions: &mut Vec<Condition>,
    problems: Option<&str>,
    generation: Option<i64>,
    now: &Time,
) -> bool {
    match problems {
        Some(summary) => set(
            conditions,
            cond::SPEC_VALID,
            false,
            reason::INVALID_SPEC,
            summary,
            generation,
            now,
        ),
        None => set(
            conditions,
            cond::SPEC_VALID,
            true,
            reason::VALID,
            "the spec is valid",
            generation,
            now,
        ),
    }
}

pub fn is_true(conditions: &[Condition], type_: &str) -> Option<bool> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let mut c = vec![];
        assert!(set(&mut c, "Ready", true, "A", "m", Some(1), &t(10)));
        assert!(!set(&mut c, "Ready", true, "A", "m", Some(1), &t(20)));
        assert_eq!(c[0].last_transition_time, t(10));
        assert!(set(&mut c, "Ready", true, "B", "other", Some(1), &t(30)));
        assert_eq!(c[0].last_transition_time, t(10));
        assert!(set(&mut c, "Ready", false, "B", "other", Some(1), &t(40)));
        assert_eq!(c[0].last_transition_time, t(40));
        assert_eq!(is_true(&c, "Ready"), Some(false));
        assert_eq!(is_true(&c, "Nope"), None);
    }

    #[test]
    fn spec_valid_carries_the_problems_or_says_valid() {
        let mut c = vec![];
        assert!(set_spec_valid(
            &mut c,
            Some("minReplicas > maxReplicas"),
            Some(2),
            &t(10)
        ));
        assert_eq!(
            (
                c[0].type_.as_str(),
                c[0].status.as_str(),
                c[0].reason.as_str()
            ),
            (cond::SPEC_VALID, "False", reason::INVALID_SPEC)
        );
        assert_eq!(c[0].message, "minReplicas > maxReplicas");
        assert!(set_spec_valid(&mut c, None, Some(3), &t(20)));
        assert_eq!(
            (c[0].status.as_str(), c[0].reason.as_str()),
            ("True", reason::VALID)
        );
        assert!(!set_spec_valid(&mut c, None, Some(3), &t(30)));
    }
}
