//! Vertical sizing (`activateVPA: true`) applied to a pod's containers: the user's container and
//! `spec.vpa` policy, and the observed peaks, turned into the facts of the shared sizing rule
//! ([`qscaler_crds::sizing`], which documents the rule and is shared with `kubectl qworker top`).
//! Pure; the pod-spec hash never sees these values (it is computed from the user's spec), so resizing
//! never starts a rollout.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use qscaler_crds::quantity::{bytes, cpu_millis};
use qscaler_crds::qworker::{ContainerUsage, VpaPolicy};
use qscaler_crds::sizing::{self as rule, ResourceFacts, DEFAULT_MARGIN_PERCENT};

/// Requests for one container; `None` leaves the user's value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

fn amount(
    map: Option<&BTreeMap<String, Quantity>>,
    key: &str,
    parse: fn(&str) -> Option<u64>,
) -> Option<u64> {
    map?.get(key).and_then(|q| parse(&q.0))
}

/// What is known of one resource of container `c`.
fn facts(
    c: &Container,
    peak: Option<&Quantity>,
    policy: &VpaPolicy,
    key: &str,
    parse: fn(&str) -> Option<u64>,
) -> ResourceFacts {
    let resources = c.resources.as_ref();
    ResourceFacts {
        peak: peak.and_then(|q| parse(&q.0)),
        request: amount(resources.and_then(|r| r.requests.as_ref()), key, parse),
        limit: amount(resources.and_then(|r| r.limits.as_ref()), key, parse),
        min_allowed: amount(Some(&policy.min_allowed), key, parse),
        max_allowed: amount(Some(&policy.max_allowed), key, parse),
    }
}

/// The requests for container `c` given its observed peak and whether it was OOM-killed.
pub fn recommend(
    c: &Container,
    peak: Option<&ContainerUsage>,
    oom: bool,
    policy: &VpaPolicy,
) -> Requests {
    let margin = policy
        .margin_percent
        .map_or(DEFAULT_MARGIN_PERCENT, |m| u64::try_from(m).unwrap_or(0));
    let cpu = facts(
        c,
        peak.and_then(|p| p.cpu.as_ref()),
        policy,
        "cpu",
        cpu_millis,
    );
    let memory = facts(
        c,
        peak.and_then(|p| p.memory.as_ref()),
        policy,
        "memory",
        bytes,
    );
    Requests {
        cpu_millis: rule::cpu_request(cpu, margin).map(|r| r.request),
        memory_bytes: rule::memory_request(memory, margin, oom).map(|r| r.request),
    }
}

/// The Kubernetes quantity strings of `r`.
pub fn quantities(r: &Requests) -> BTreeMap<String, Quantity> {
    let mut m = BTreeMap::new();
    if let Some(c) = r.cpu_millis {
        m.insert("cpu".to_string(), Quantity(format!("{c}m")));
    }
    if let Some(b) = r.memory_bytes {
        m.insert("memory".to_string(), Quantity(b.to_string()));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use proptest::prelude::*;

    fn container(limits: &[(&str, &str)]) -> Container {
        Container {
            name: "w".into(),
            resources: (!limits.is_empty()).then(|| ResourceRequirements {
                limits: Some(
                    limits
                        .iter()
                        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn peak(cpu: &str, mem: &str) -> ContainerUsage {
        ContainerUsage {
            name: "w".into(),
            cpu: Some(Quantity(cpu.into())),
            memory: Some(Quantity(mem.into())),
        }
    }

    const MI: u64 = 1 << 20;

    #[test]
    fn margin_floor_limit() {
        let p = VpaPolicy::default();
        let r = recommend(
            &container(&[]),
            Some(&peak("500m", &(200 * MI).to_string())),
            false,
            &p,
        );
        assert_eq!(
            r,
            Requests {
                cpu_millis: Some(600),
                memory_bytes: Some(240 * MI)
            }
        );
        let r = recommend(&container(&[]), Some(&peak("1m", "1000")), false, &p);
        assert_eq!(
            r,
            Requests {
                cpu_millis: Some(rule::CPU_FLOOR_MILLIS),
                memory_bytes: Some(rule::MEMORY_FLOOR_BYTES)
            }
        );
        let r = recommend(
            &container(&[("cpu", "550m"), ("memory", "220Mi")]),
            Some(&peak("500m", &(200 * MI).to_string())),
            false,
            &p,
        );
        assert_eq!(
            r,
            Requests {
                cpu_millis: Some(550),
                memory_bytes: Some(220 * MI)
            }
        );
        assert_eq!(
            recommend(&container(&[]), None, false, &p),
            Requests::default()
        );
    }

    #[test]
    fn oom_bump_is_the_larger_of_plus_100mi_and_times_1_2() {
        let p = VpaPolicy {
            margin_percent: Some(0),
            ..Default::default()
        };
        let small = recommend(
            &container(&[]),
            Some(&peak("1", &(100 * MI).to_string())),
            true,
            &p,
        );
        assert_eq!(small.memory_bytes, Some(200 * MI));
        let big = recommend(
            &container(&[]),
            Some(&peak("1", &(1000 * MI).to_string())),
            true,
            &p,
        );
        assert_eq!(big.memory_bytes, Some(1200 * MI));
    }

    #[test]
    fn policy_bounds() {
        let p = VpaPolicy {
            margin_percent: Some(50),
            min_allowed: [("cpu".to_string(), Quantity("200m".into()))].into(),
            max_allowed: [("memory".to_string(), Quantity("64Mi".into()))].into(),
        };
        let r = recommend(
            &container(&[]),
            Some(&peak("100m", &(100 * MI).to_string())),
            false,
            &p,
        );
        assert_eq!(
            r,
            Requests {
                cpu_millis: Some(200),
                memory_bytes: Some(64 * MI)
            }
        );
        assert_eq!(quantities(&r)["cpu"], Quantity("200m".into()));
    }

    proptest! {
        #[test]
        fn never_above_limits_never_below_floors(cpu in 0u64..100_000, mem in 0u64..(64u64 << 30), lc in 10u64..100_000, lm in (16u64 << 20)..(64u64 << 30), oom in any::<bool>(), margin in 0i32..1000) {
            let c = container(&[("cpu", &format!("{lc}m")), ("memory", &lm.to_string())]);
            let r = recommend(&c, Some(&peak(&format!("{cpu}m"), &mem.to_string())), oom, &VpaPolicy { margin_percent: Some(margin), ..Default::default() });
            let (rc, rm) = (r.cpu_millis.unwrap(), r.memory_bytes.unwrap());
            prop_assert!(rc <= lc && rm <= lm);
            prop_assert!(rc >= rule::CPU_FLOOR_MILLIS.min(lc) && rm >= rule::MEMORY_FLOOR_BYTES.min(lm));
            prop_assert!(rc >= cpu.min(lc));
            prop_assert!(rm >= mem.min(lm));
        }
    }
}
