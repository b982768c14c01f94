//! Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it: the
//! holder renews `renewTime` every `renew` interval; another replica takes over when `renewTime +
//! leaseDurationSeconds` has passed. Every write carries the Lease's resourceVersion, so two replicas
//! racing for an expired lease cannot both win. A leader that cannot renew before its lease runs out
//! stops (the process exits and restarts as a follower) rather than risk two deciders.

use std::time::Duration;

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
}

/// What to do with the lease as observed (pure, tested).
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Ours or free: write it with us as holder.
    Take { transition: bool },
    /// Someone else holds it and it has not expired.
    Wait,
}

pub fn claim(spec: Option<&LeaseSpec>, me: &str, now_ms: i64, default_duration: Duration) -> Claim {
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
    let duration_ms = spec
        .lease_duration_seconds
        .map(|s| i64::from(s) * 1000)
        .unwrap_or(default_duration.as_millis() as i64);
    let renewed = spec
        .renew_time
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .unwrap_or(0);
    if now_ms > renewed + duration_ms {
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
        }
    }

    /// One attempt to take or renew the lease. Ok(true) when we hold it afterwards.
    pub async fn try_acquire(&self) -> kube::Result<bool> {
        let current = self.api.get_opt(&self.name).await?;
        let now_t = now();
        let now_ms = now_t.0.as_millisecond();
        match claim(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now_ms,
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
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
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

    #[test]
    fn claims() {
        let d = Duration::from_secs(15);
        assert_eq!(claim(None, "a", 0, d), Claim::Take { transition: true });
        assert_eq!(
            claim(Some(&spec(Some("a"), 0, 15)), "a", 1_000_000, d),
            Claim::Take { transition: false }
        );
        assert_eq!(
            claim(Some(&spec(Some("b"), 100_000, 15)), "a", 110_000, d),
            Claim::Wait
        );
        assert_eq!(
            claim(Some(&spec(Some("b"), 100_000, 15)), "a", 115_001, d),
            Claim::Take { transition: true }
        );
        assert_eq!(
            claim(Some(&spec(None, 100_000, 15)), "a", 100_001, d),
            Claim::Take { transition: true }
        );
    }
}
