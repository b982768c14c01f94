//! Vertical sizing (`activateVPA: true`): the requests a new pod's containers get, from the peaks
//! the supervisors observed. Pure; the pod-spec hash never sees these values (it is computed from the
//! user's spec), so resizing never starts a rollout.
//!
//! Rules, per container and resource (cpu, memory):
//! - no observed peak → the user's request stays as written;
//! - request = peak × (1 + margin), margin `spec.vpa.marginPercent` (default 20 %);
//! - memory after an OOM kill: at least max(peak + 100 MiB, peak × 1.2) (the VPA recommender's bump);
//! - floors: `spec.vpa.minAllowed`, else 10m CPU / 16 MiB memory;
//! - ceilings: `spec.vpa.maxAllowed`, then the container's limit (a request above the limit would be
//!   rejected). Without any limit or maxAllowed there is no ceiling: the peak is the only guide.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use qscaler_crds::qworker::{ContainerUsage, VpaPolicy};

use crate::observe::{parse_bytes, parse_cpu_millis};

pub const DEFAULT_MARGIN_PERCENT: i32 = 20;
pub const MIN_CPU_MILLIS: u64 = 10;
pub const MIN_MEMORY_BYTES: u64 = 16 << 20;
pub const OOM_BUMP_BYTES: u64 = 100 << 20;

/// Requests for one container; `None` leaves the user's value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

fn quantity(
    map: &BTreeMap<String, Quantity>,
    key: &str,
    parse: fn(&str) -> Option<u64>,
) -> Option<u64> {
    map.get(key).and_then(|q| parse(&q.0))
}

fn limit(c: &Container, key: &str, parse: fn(&str) -> Option<u64>) -> Option<u64> {
    c.resources
        .as_ref()?
        .limits
        .as_ref()?
        .get(key)
        .and_then(|q| parse(&q.0))
}

fn scale(v: u64, margin: i32) -> u64 {
    v.saturating_mul(100 + margin.max(0) as u64).div_ceil(100)
}

/// The requests for container `c` given its observed peak and whether it was OOM-killed.
pub fn recommend(
    c: &Container,
    peak: Option<&ContainerUsage>,
    oom: bool,
    policy: &VpaPolicy,
) -> Requests {
    let margin = policy.margin_percent.unwrap_or(DEFAULT_MARGIN_PERCENT);
    let cpu_peak = peak
        .and_then(|p| p.cpu.as_ref())
        .and_then(|q| parse_cpu_millis(&q.0));
    let mem_peak = peak
        .and_then(|p| p.memory.as_ref())
        .and_then(|q| parse_bytes(&q.0));
    let bound = |v: u64, key: &str, floor: u64, parse: fn(&str) -> Option<u64>| {
        let mut v = v.max(quantity(&policy.min_allowed, key, parse).unwrap_or(floor));
        if let Some(max) = quantity(&policy.max_allowed, key, parse) {
            v = v.min(max);
        }
        if let Some(l) = limit(c, key, parse) {
            v = v.min(l);
        }
        v
    };
    Requests {
        cpu_millis: cpu_peak
            .map(|p| bound(scale(p, margin), "cpu", MIN_CPU_MILLIS, parse_cpu_millis)),
        memory_bytes: mem_peak.map(|p| {
            let mut m = scale(p, margin);
            if oom {
                m = m.max(p.saturating_add(OOM_BUMP_BYTES)).max(scale(p, 20));
            }
            bound(m, "memory", MIN_MEMORY_BYTES, parse_bytes)
        }),
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
                cpu_millis: Some(MIN_CPU_MILLIS),
                memory_bytes: Some(MIN_MEMORY_BYTES)
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
            prop_assert!(rc >= MIN_CPU_MILLIS.min(lc) && rm >= MIN_MEMORY_BYTES.min(lm));
            prop_assert!(rc >= cpu.min(lc));
            prop_assert!(rm >= mem.min(lm));
        }
    }
}
