//! Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it: the
//! holder renews `renewTime` every `renew` interval; another replica takes over when it has seen the
//! lease record unchanged for `leaseDurationSeconds` on its own clock. The holder's `renewTime` is never
//! compared with this machine's clock: with clock skew between nodes a replica would take a live lease
//! (holder's clock behind) or wait for ever (ahead). Every write carries the Lease's resourceVersion, so
//! two replicas racing for an expired lease cannot both win. A leader that cannot renew before its
//! lease runs out stops (the process exits and restarts as a follower) rather than risk two deciders.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    renew: Duration,
    /// The record last read or written, and when this process saw it change.
    observed: Mutex<Option<Observation>>,
}

/// A lease record and the local instant at which it was first seen in that form.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub spec: Option<LeaseSpec>,
    pub at: Instant,
}

impl Observation {
    /// The observation after reading `spec` at `now`: the clock restarts only when the record differs
    /// from the one seen before (client-go's `observedRecord`/`observedTime`).
    pub fn next(previous: Option<&Observation>, spec: Option<&LeaseSpec>, now: Instant) -> Self {
        match previous {
            Some(p) if p.spec.as_ref() == spec => p.clone(),
            _ => Observation {
                spec: spec.cloned(),
                at: now,
            },
        }
    }
}

/// What to do with the lease as observed (pure, tested).
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Ours or free: write it with us as holder.
    Take { transition: bool },
    /// Someone else holds it and it has not expired.
    Wait,
}

/// Whether `me` may write the lease `spec`, unchanged since `observed_at`, at `now` (both local,
/// monotonic).
pub fn claim(
    spec: Option<&LeaseSpec>,
    me: &str,
    observed_at: Instant,
    now: Instant,
    default_duration: Duration,
) -> Claim {
    let Some(spec) = spec else {
        return Claim::Take { transition: true };
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return Claim::Take { transition: false };
    }
    if holder.is_empty() {
        return Claim::Take { transition: true };
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(default_duration);
    if now.saturating_duration_since(observed_at) > duration {
        Claim::Take { transition: true }
    } else {
        Claim::Wait
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaderElector {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: String) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity,
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(2),
            observed: Mutex::new(None),
        }
    }

    /// One attempt to take or renew the lease. Ok(true) when we hold it afterwards.
    pub async fn try_acquire(&self) -> kube::Result<bool> {
        let current = self.api.get_opt(&self.name).await?;
        let now_t = now();
        let seen = Instant::now();
        let observed_at = self.observe(current.as_ref().and_then(|l| l.spec.as_ref()), seen);
        match claim(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            observed_at,
            seen,
            self.duration,
        ) {
            Claim::Wait => Ok(false),
            Claim::Take { transition } => {
                let old_spec = current
                    .as_ref()
                    .and_then(|l| l.spec.clone())
                    .unwrap_or_default();
                let spec = LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration.as_secs() as i32),
                    acquire_time: if transition {
                        Some(now_t.clone())
                    } else {
                        old_spec.acquire_time.clone()
                    },
                    renew_time: Some(now_t),
                    lease_transitions: Some(
                        old_spec.lease_transitions.unwrap_or(0)
                            + i32::from(transition && current.is_some()),
                    ),
                    ..Default::default()
                };
                let written = spec.clone();
                let result = match current {
                    None => {
                        let lease = Lease {
                            metadata: ObjectMeta {
                                name: Some(self.name.clone()),
                                ..Default::default()
                            },
                            spec: Some(spec),
                        };
                        self.api.create(&PostParams::default(), &lease).await
                    }
                    Some(mut lease) => {
                        lease.spec = Some(spec);
                        self.api
                            .replace(&self.name, &PostParams::default(), &lease)
                            .await
                    }
                };
                match result {
                    Ok(_) => {
                        self.observe(Some(&written), seen);
                        Ok(true)
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Records the lease as read (or written) at `now`; returns since when it has been unchanged.
    fn observe(&self, spec: Option<&LeaseSpec>, now: Instant) -> Instant {
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        let next = Observation::next(observed.as_ref(), spec, now);
        let at = next.at;
        *observed = Some(next);
        at
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: lease not reachable"),
            }
            tokio::time::sleep(self.renew).await;
        }
    }

    /// Renews until the lease is lost; returns then.
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "leadership lost to another replica");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: renewal failed");
                    if last_ok.elapsed() + self.renew >= self.duration {
                        tracing::error!(lease = %self.name, "could not renew the lease in time; stepping down");
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up on a clean shutdown so the next leader need not wait for expiry.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            if lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.identity.as_str())
            {
                if let Some(spec) = lease.spec.as_mut() {
                    spec.holder_identity = None;
                }
                let _ = self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease held by `holder`, renewed at `renewed_ms` on the holder's clock.
    fn spec(holder: Option<&str>, renewed_ms: i64, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_millisecond(renewed_ms).unwrap(),
            )),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn free_or_own_leases_are_taken_at_once() {
        let t0 = Instant::now();
        assert_eq!(
            claim(None, "a", t0, t0, D),
            Claim::Take { transition: true }
        );
        assert_eq!(
            claim(Some(&spec(Some("a"), 0, 15)), "a", t0, t0, D),
            Claim::Take { transition: false }
        );
        assert_eq!(
            claim(Some(&spec(None, 100_000, 15)), "a", t0, t0, D),
            Claim::Take { transition: true }
        );
    }

    #[test]
    fn another_holder_s_lease_expires_after_its_duration_of_local_time_unchanged() {
        let t0 = Instant::now();
        let s = spec(Some("b"), 100_000, 15);
        assert_eq!(
            claim(Some(&s), "a", t0, t0 + Duration::from_secs(15), D),
            Claim::Wait
        );
        assert_eq!(
            claim(Some(&s), "a", t0, t0 + Duration::from_millis(15_001), D),
            Claim::Take { transition: true }
        );
        // No duration in the record: the elector's own.
        let mut s = s;
        s.lease_duration_seconds = None;
        assert_eq!(
            claim(Some(&s), "a", t0, t0 + Duration::from_secs(14), D),
            Claim::Wait
        );
    }

    /// The holder's clock far behind ours (renewTime a day in the past) or far ahead: only what this
    /// process saw counts. The old rule (renewTime + duration < our wall clock) took the lease of a
    /// live holder whose clock was behind, and never took one whose holder's clock was ahead.
    #[test]
    fn skewed_clocks_do_not_matter() {
        let wall_now_ms: i64 = 1_800_000_000_000;
        let t0 = Instant::now();
        for skew_ms in [-86_400_000, -60_000, 0, 60_000, 86_400_000] {
            let mut observed: Option<Observation> = None;
            // The holder renews every 2 s on its clock; we read after each renewal.
            for i in 0..20u64 {
                let now = t0 + Duration::from_secs(2 * i);
                let s = spec(Some("b"), wall_now_ms + skew_ms + 2_000 * i as i64, 15);
                let o = Observation::next(observed.as_ref(), Some(&s), now);
                assert_eq!(o.at, now, "a renewal is a change");
                assert_eq!(claim(Some(&s), "a", o.at, now, D), Claim::Wait, "{skew_ms}");
                observed = Some(o);
            }
            // The holder dies: the record stops changing.
            let last = observed.clone().expect("observed");
            let s = last.spec.clone().expect("spec");
            for secs in [1, 10, 15] {
                let now = last.at + Duration::from_secs(secs);
                let o = Observation::next(observed.as_ref(), Some(&s), now);
                assert_eq!(o.at, last.at, "an unchanged record keeps its time");
                assert_eq!(
                    claim(Some(&s), "a", o.at, now, D),
                    Claim::Wait,
                    "{skew_ms} {secs}"
                );
            }
            let now = last.at + Duration::from_secs(16);
            let o = Observation::next(observed.as_ref(), Some(&s), now);
            assert_eq!(
                claim(Some(&s), "a", o.at, now, D),
                Claim::Take { transition: true },
                "{skew_ms}"
            );
        }
    }

    #[test]
    fn a_new_process_waits_a_full_duration_even_for_an_old_record() {
        // renewTime a year ago: still a full lease duration from our first look (as client-go).
        let t0 = Instant::now();
        let s = spec(Some("b"), 0, 15);
        let o = Observation::next(None, Some(&s), t0);
        assert_eq!(o.at, t0);
        assert_eq!(claim(Some(&s), "a", o.at, t0, D), Claim::Wait);
        let later = t0 + Duration::from_secs(16);
        let o = Observation::next(Some(&o), Some(&s), later);
        assert_eq!(
            claim(Some(&s), "a", o.at, later, D),
            Claim::Take { transition: true }
        );
    }

    #[test]
    fn a_changed_holder_or_disappearance_restarts_the_clock() {
        let t0 = Instant::now();
        let s = spec(Some("b"), 0, 15);
        let o = Observation::next(None, Some(&s), t0);
        let t1 = t0 + Duration::from_secs(10);
        let c = spec(Some("c"), 0, 15);
        assert_eq!(Observation::next(Some(&o), Some(&c), t1).at, t1);
        assert_eq!(Observation::next(Some(&o), None, t1).at, t1);
    }
}
