//! Vertical sizing: the requests a new worker pod gets from the peaks its predecessors reached.
//!
//! The rule, per container and resource (cpu in millicores, memory in bytes):
//! 1. No observed peak → no recommendation: the user's request stands.
//! 2. Request = peak × (1 + margin), margin `spec.vpa.marginPercent` (default 20 %).
//! 3. After an OOM kill, memory = max(that, max(peak, current request) bumped by max(+100 MiB, ×1.2)),
//!    the bump the Kubernetes VPA recommender uses after an OOM.
//! 4. Floors: at least [`CPU_FLOOR_MILLIS`] and [`MEMORY_FLOOR_BYTES`], and at least `spec.vpa.minAllowed`.
//! 5. At most `spec.vpa.maxAllowed`.
//! 6. Never above the container's limit: a request above its limit would make the pod invalid. With no
//!    limit set, only `maxAllowed` caps it (the pod is Burstable and may use what the node has).
//!
//! Limits are never changed: vertical sizing only moves requests, so scheduling reflects real use while
//! the user's ceiling stays theirs.

/// The lowest CPU request ever recommended (a process that did not run still needs a slice).
pub const CPU_FLOOR_MILLIS: u64 = 10;
/// The lowest memory request ever recommended.
pub const MEMORY_FLOOR_BYTES: u64 = 16 << 20;
/// Default headroom above the peak, in percent.
pub const DEFAULT_MARGIN_PERCENT: u64 = 20;
/// Memory added after an OOM kill, at least.
pub const OOM_BUMP_BYTES: u64 = 100 << 20;
/// Memory multiplied after an OOM kill, at least (in percent).
pub const OOM_BUMP_PERCENT: u64 = 120;

/// What is known of one resource of one container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceFacts {
    /// The highest use observed (millicores or bytes); None when nothing was reported.
    pub peak: Option<u64>,
    /// The request in the user's pod spec.
    pub request: Option<u64>,
    /// The limit in the user's pod spec.
    pub limit: Option<u64>,
    /// `spec.vpa.minAllowed` for this resource.
    pub min_allowed: Option<u64>,
    /// `spec.vpa.maxAllowed` for this resource.
    pub max_allowed: Option<u64>,
}

/// A recommended request, and what bounded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recommendation {
    pub request: u64,
    /// The container's limit (or maxAllowed) cut the request below what the peak asked for.
    pub capped: bool,
}

/// The CPU request for a container.
pub fn cpu_request(facts: ResourceFacts, margin_percent: u64) -> Option<Recommendation> {
    let wanted = with_margin(facts.peak?, margin_percent);
    Some(bound(wanted, CPU_FLOOR_MILLIS, facts))
}

/// The memory request for a container; `oom_killed` when a worker of this container was OOM-killed.
pub fn memory_request(
    facts: ResourceFacts,
    margin_percent: u64,
    oom_killed: bool,
) -> Option<Recommendation> {
    let peak = facts.peak?;
    let mut wanted = with_margin(peak, margin_percent);
    if oom_killed {
        let base = peak.max(facts.request.unwrap_or(0));
        let bumped = base
            .saturating_add(OOM_BUMP_BYTES)
            .max(base.saturating_mul(OOM_BUMP_PERCENT) / 100);
        wanted = wanted.max(bumped);
    }
    Some(bound(wanted, MEMORY_FLOOR_BYTES, facts))
}

fn with_margin(peak: u64, margin_percent: u64) -> u64 {
    let extra = (peak as u128 * margin_percent as u128).div_ceil(100);
    u64::try_from(peak as u128 + extra).unwrap_or(u64::MAX)
}

fn bound(wanted: u64, floor: u64, facts: ResourceFacts) -> Recommendation {
    let floored = wanted.max(floor).max(facts.min_allowed.unwrap_or(0));
    let ceiling = match (facts.max_allowed, facts.limit) {
        (Some(m), Some(l)) => Some(m.min(l)),
        (m, l) => m.or(l),
    };
    match ceiling {
        Some(c) if floored > c => Recommendation {
            request: c,
            capped: wanted > c,
        },
        _ => Recommendation {
            request: floored,
            capped: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MI: u64 = 1 << 20;

    fn facts(peak: u64) -> ResourceFacts {
        ResourceFacts {
            peak: Some(peak),
            ..Default::default()
        }
    }

    #[test]
    fn no_peak_no_recommendation() {
        assert_eq!(cpu_request(ResourceFacts::default(), 20), None);
        assert_eq!(
            memory_request(
                ResourceFacts {
                    request: Some(5),
                    ..Default::default()
                },
                20,
                true
            ),
            None
        );
    }

    #[test]
    fn margin_is_added_and_rounded_up() {
        assert_eq!(
            cpu_request(facts(250), 20),
            Some(Recommendation {
                request: 300,
                capped: false
            })
        );
        assert_eq!(
            cpu_request(facts(101), 10),
            Some(Recommendation {
                request: 112,
                capped: false
            })
        );
        assert_eq!(
            memory_request(facts(100 * MI), 0, false).map(|r| r.request),
            Some(100 * MI)
        );
    }

    #[test]
    fn floors_apply() {
        assert_eq!(
            cpu_request(facts(1), 20).map(|r| r.request),
            Some(CPU_FLOOR_MILLIS)
        );
        assert_eq!(
            memory_request(facts(MI), 20, false).map(|r| r.request),
            Some(MEMORY_FLOOR_BYTES)
        );
        let f = ResourceFacts {
            min_allowed: Some(500),
            ..facts(100)
        };
        assert_eq!(cpu_request(f, 20).map(|r| r.request), Some(500));
    }

    #[test]
    fn never_above_the_limit_or_max_allowed() {
        let f = ResourceFacts {
            limit: Some(1000),
            ..facts(2000)
        };
        assert_eq!(
            cpu_request(f, 20),
            Some(Recommendation {
                request: 1000,
                capped: true
            })
        );
        let f = ResourceFacts {
            limit: Some(1000),
            max_allowed: Some(800),
            ..facts(2000)
        };
        assert_eq!(
            cpu_request(f, 20),
            Some(Recommendation {
                request: 800,
                capped: true
            })
        );
        let f = ResourceFacts {
            max_allowed: Some(800),
            ..facts(2000)
        };
        assert_eq!(
            cpu_request(f, 20),
            Some(Recommendation {
                request: 800,
                capped: true
            })
        );
        // No limit and no maxAllowed: nothing caps it.
        assert_eq!(
            cpu_request(facts(2000), 20),
            Some(Recommendation {
                request: 2400,
                capped: false
            })
        );
        // The floor never lifts a request above a small limit.
        let f = ResourceFacts {
            limit: Some(5),
            ..facts(1)
        };
        assert_eq!(cpu_request(f, 20).map(|r| r.request), Some(5));
    }

    #[test]
    fn oom_bumps_memory_by_at_least_100mi_or_20_percent() {
        // Small: +100Mi wins over ×1.2.
        let f = ResourceFacts {
            request: Some(64 * MI),
            ..facts(60 * MI)
        };
        assert_eq!(
            memory_request(f, 20, true).map(|r| r.request),
            Some(164 * MI)
        );
        // Large: ×1.2 wins over +100Mi.
        let f = ResourceFacts {
            request: Some(1000 * MI),
            ..facts(900 * MI)
        };
        assert_eq!(
            memory_request(f, 20, true).map(|r| r.request),
            Some(1200 * MI)
        );
        // The bump still respects the limit.
        let f = ResourceFacts {
            request: Some(64 * MI),
            limit: Some(128 * MI),
            ..facts(128 * MI)
        };
        assert_eq!(
            memory_request(f, 20, true),
            Some(Recommendation {
                request: 128 * MI,
                capped: true
            })
        );
    }

    proptest! {
        #[test]
        fn request_is_within_bounds(
            peak in 0u64..(1 << 40), margin in 0u64..=1000, limit in proptest::option::of(1u64..(1 << 40)),
            min in proptest::option::of(0u64..(1 << 30)), max in proptest::option::of(1u64..(1 << 40)), oom in any::<bool>(),
        ) {
            let f = ResourceFacts { peak: Some(peak), request: None, limit, min_allowed: min, max_allowed: max };
            for r in [cpu_request(f, margin), memory_request(f, margin, oom)].into_iter().flatten() {
                if let Some(l) = limit { prop_assert!(r.request <= l); }
                if let Some(m) = max { prop_assert!(r.request <= m); }
                let ceiling = limit.into_iter().chain(max).min();
                if ceiling.is_none_or(|c| c >= peak) { prop_assert!(r.request >= peak, "covers the peak when allowed"); }
            }
        }

        #[test]
        fn oom_never_lowers_memory(peak in 0u64..(1 << 40), margin in 0u64..=1000) {
            let f = facts(peak);
            prop_assert!(memory_request(f, margin, true).map(|r| r.request) >= memory_request(f, margin, false).map(|r| r.request));
        }
    }
}
