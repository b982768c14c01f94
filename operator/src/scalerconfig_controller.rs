//! The ScalerConfig controller: validate, resolve the password, (re)start the poller, and write what
//! the poller sees as `status` (healthy, message, Ready/SpecValid conditions) and Events.
//!
//! Secrets (the password, and the TLS CA bundle of `tls.caSecretRef`): RBAC grants only `get` on
//! secrets (no list/watch: a watch on every Secret of a namespace is more than a scaler should see).
//! So the secrets are re-read on every reconcile, and the reconcile requeues itself every
//! `--health-interval` (30 s): a rotated password or CA restarts the poller with the new one within
//! that time. Secrets are always read from the ScalerConfig's own namespace.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as FinalizerEvent};
use kube::{Api, Resource, ResourceExt};
use qscaler_crds::conditions::{self as cond, reason};
use qscaler_crds::names;
use qscaler_crds::scalerconfig::{SecretKeyRef, ValueOrSecret};
use qscaler_crds::validation::{summary, validate_scaler_config};
use qscaler_crds::{QWorker, ScalerConfig};
use qscaler_queue::{Node, SentinelParams, Topology};

use crate::conditions;
use crate::context::Context;
use crate::object_key::ObjectKey;
use crate::poller::Health;
use crate::redis_broker::{check_ca_pem, RedisParams};
use crate::Error;

/// Why no poller can run.
enum Blocked {
    Invalid(String),
    SecretNotFound(String),
}

/// The bytes under `r.key` of Secret `r.name` in `ns` (only ever the ScalerConfig's own namespace).
async fn secret_value(
    ctx: &Context,
    ns: &str,
    r: &SecretKeyRef,
) -> Result<Result<Vec<u8>, Blocked>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    Ok(match secrets.get_opt(&r.name).await? {
        None => Err(Blocked::SecretNotFound(format!(
            "secret {ns}/{} not found",
            r.name
        ))),
        Some(s) => match s.data.and_then(|mut d| d.remove(&r.key)) {
            Some(v) => Ok(v.0),
            None => Err(Blocked::SecretNotFound(format!(
                "secret {ns}/{} has no key {:?}",
                r.name, r.key
            ))),
        },
    })
}

/// A password from its Secret (one trailing newline dropped, as `kubectl create secret
/// --from-file` leaves it) or given inline.
async fn secret_password(
    ctx: &Context,
    ns: &str,
    secret: Option<&SecretKeyRef>,
    given: Option<&ValueOrSecret>,
) -> Result<Result<Option<String>, Blocked>, Error> {
    Ok(match secret {
        Some(r) => secret_value(ctx, ns, r).await?.map(|v| {
            Some(
                String::from_utf8_lossy(&v)
                    .trim_end_matches('\n')
                    .to_string(),
            )
        }),
        None => Ok(given.and_then(|p| p.value.clone())),
    })
}

/// A CA bundle from its Secret, checked here so a Secret holding something else says so instead
/// of every connection failing with "unknown issuer".
async fn secret_ca_bundle(
    ctx: &Context,
    ns: &str,
    secret: Option<&SecretKeyRef>,
) -> Result<Result<Option<Vec<u8>>, Blocked>, Error> {
    let Some(r) = secret else {
        return Ok(Ok(None));
    };
    Ok(match secret_value(ctx, ns, r).await? {
        Ok(pem) => match check_ca_pem(&pem) {
            Ok(()) => Ok(Some(pem)),
            Err(e) => Err(Blocked::SecretNotFound(format!(
                "secret {ns}/{} key {:?} is not a CA bundle: {e}",
                r.name, r.key
            ))),
        },
        Err(b) => Err(b),
    })
}

async fn resolve(ctx: &Context, sc: &ScalerConfig) -> Result<Result<RedisParams, Blocked>, Error> {
    let problems = validate_scaler_config(&sc.spec);
    if !problems.is_empty() {
        return Ok(Err(Blocked::Invalid(summary(&problems))));
    }
    let ns = sc.namespace().unwrap_or_default();
    let c = &sc.spec.config;
    let port = match c.port_number() {
        Ok(p) => p,
        Err(e) => return Ok(Err(Blocked::Invalid(format!("spec.config.port: {e}")))),
    };
    let password = match secret_password(ctx, &ns, c.password_secret(), c.password.as_ref()).await?
    {
        Ok(p) => p,
        Err(b) => return Ok(Err(b)),
    };
    let tls_ca = match secret_ca_bundle(ctx, &ns, c.tls_ca_secret()).await? {
        Ok(pem) => pem,
        Err(b) => return Ok(Err(b)),
    };
    let topology = match (&c.sentinel, &c.cluster) {
        (Some(s), _) => {
            let password =
                match secret_password(ctx, &ns, s.password_secret(), s.password.as_ref()).await? {
                    Ok(p) => p,
                    Err(b) => return Ok(Err(b)),
                };
            let tls_ca = match secret_ca_bundle(ctx, &ns, s.tls_ca_secret()).await? {
                Ok(pem) => pem,
                Err(b) => return Ok(Err(b)),
            };
            let stls = s.tls.clone().unwrap_or_default();
            Topology::Sentinel(SentinelParams {
                nodes: nodes(&s.nodes),
                master: s.master_name.trim().to_string(),
                username: s.username.clone().filter(|u| !u.is_empty()),
                password,
                tls: stls.enabled,
                tls_insecure: stls.insecure_skip_verify,
                tls_ca,
            })
        }
        (None, Some(cl)) => Topology::Cluster(nodes(&cl.nodes)),
        (None, None) => Topology::Single,
    };
    let tls = c.tls.clone().unwrap_or_default();
    Ok(Ok(RedisParams {
        host: c.host.trim().to_string(),
        port,
        db: c.db.unwrap_or(0),
        username: c.username.clone().filter(|u| !u.is_empty()),
        password,
        tls: tls.enabled,
        tls_insecure: tls.insecure_skip_verify,
        tls_ca,
        topology,
    }))
}

/// Validated `host:port` strings (validation refused the others) as nodes.
fn nodes(given: &[String]) -> Vec<Node> {
    given.iter().filter_map(|n| Node::parse(n).ok()).collect()
}

pub async fn reconcile(sc: Arc<ScalerConfig>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .reconcile("scalerconfig", with_finalizer(sc, &ctx))
        .await
}

/// The finalizer ([`names::FINALIZER`], kube-runtime's helper): a ScalerConfig still used by
/// QWorkers is not let go, because their deletion returns in-flight tasks through it. While it
/// waits it keeps working (poller, status) and says so in the `Deleting` condition.
async fn with_finalizer(sc: Arc<ScalerConfig>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let ns = sc.namespace().unwrap_or_default();
    let name = sc.name_any();
    let api: Api<ScalerConfig> = Api::namespaced(ctx.client.clone(), &ns);
    let deleting = sc.metadata.deletion_timestamp.is_some();
    let ours = sc.finalizers().iter().any(|f| f == names::FINALIZER);
    if deleting && !ours {
        return Ok(Action::await_change());
    }
    // Who still uses it, from the API (not the QWorker cache, which may not have listed yet).
    let users: Vec<String> = if deleting {
        let mut users: Vec<String> = Api::<QWorker>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|q| q.spec.scale_config.scaler_config_ref == name)
            .map(|q| q.name_any())
            .collect();
        users.sort();
        users
    } else {
        vec![]
    };
    if deleting && !users.is_empty() {
        reconcile_inner(&sc, ctx, Some(&users)).await?;
        return Ok(Action::requeue(
            std::time::Duration::from_secs(5).min(ctx.settings.health_interval),
        ));
    }
    let action = finalizer(&api, names::FINALIZER, sc.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(sc) => reconcile_inner(&sc, ctx, None).await,
            FinalizerEvent::Cleanup(_) => Ok(Action::await_change()),
        }
    })
    .await
    .map_err(|e| match e {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        FinalizerError::AddFinalizer(e) | FinalizerError::RemoveFinalizer(e) => e.into(),
        other => Error::Internal(other.to_string()),
    })?;
    if deleting {
        tracing::info!(namespace = %ns, scalerconfig = %name, "ScalerConfig deleted: no QWorker uses it any more");
        ctx.pollers.stop(&ObjectKey::new(ns, name));
    }
    Ok(action)
}

async fn reconcile_inner(
    sc: &ScalerConfig,
    ctx: &Arc<Context>,
    deleting_users: Option<&[String]>,
) -> Result<Action, Error> {
    let ns = sc.namespace().unwrap_or_default();
    let name = sc.name_any();
    let key = ObjectKey::new(&ns, &name);
    let resolved = resolve(ctx, sc).await?;

    let health: Result<Health, Blocked> = match resolved {
        Err(b) => {
            ctx.pollers.stop(&key);
            Err(b)
        }
        Ok(params) => {
            let (mut rx, started) = ctx.pollers.ensure(&ctx.poller_env(), &key, params.clone());
            if started {
                tracing::info!(namespace = %ns, scalerconfig = %name, url = %params.display_url(), "starting queue poller");
            }
            let wait = ctx.settings.broker_timeout * 3 + ctx.settings.poll_interval;
            let h = tokio::time::timeout(wait, rx.wait_for(|h| h.is_some()))
                .await
                .ok()
                .and_then(|r| r.ok().and_then(|h| h.clone()));
            Ok(h.unwrap_or(Health {
                ok: false,
                auth_failed: false,
                message: "no answer from the broker yet".into(),
            }))
        }
    };

    let old = sc.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = sc.metadata.generation;
    status.observed_generation = generation;
    let (healthy, ready_reason, message, spec_valid) = match &health {
        // "connected", and whether a push wakes the poller (see the poller's push module).
        Ok(h) if h.ok => (true, reason::CONNECTED, h.message.clone(), None),
        Ok(h) => (false, reason::BROKER_UNREACHABLE, h.message.clone(), None),
        Err(Blocked::SecretNotFound(m)) => (false, reason::SECRET_NOT_FOUND, m.clone(), None),
        Err(Blocked::Invalid(m)) => (false, reason::INVALID_SPEC, m.clone(), Some(m.clone())),
    };
    status.healthy = healthy;
    status.message = message.clone();
    conditions::set(
        &mut status.conditions,
        cond::READY,
        healthy,
        ready_reason,
        message.clone(),
        generation,
        &now,
    );
    conditions::set_spec_valid(
        &mut status.conditions,
        spec_valid.as_deref(),
        generation,
        &now,
    );
    if let Some(users) = deleting_users {
        conditions::set(
            &mut status.conditions,
            cond::DELETING,
            true,
            reason::QWORKERS_REMAIN,
            deletion_message(users),
            generation,
            &now,
        );
    }

    if status != old {
        let api: Api<ScalerConfig> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
        let flipped = old.healthy != healthy
            || conditions::is_true(&old.conditions, cond::READY).is_none()
            || old
                .conditions
                .iter()
                .find(|c| c.type_ == cond::READY)
                .map(|c| c.reason.as_str())
                != Some(ready_reason);
        if flipped {
            let (type_, r) = if healthy {
                (EventType::Normal, ready_reason)
            } else {
                (EventType::Warning, ready_reason)
            };
            publish(ctx, sc, type_, r, &message).await;
        }
        // QWorkers show ScalerHealthy and build pods from this spec: let them see a change now,
        // not at their next periodic reconcile.
        if flipped || old.observed_generation != generation {
            for qw in ctx.qworkers_of(&key) {
                ctx.triggers.qworker(&ObjectKey::of(qw.as_ref()));
            }
        }
    }
    Ok(Action::requeue(ctx.settings.health_interval))
}

/// The `Deleting` condition's message while QWorkers still use a deleted ScalerConfig.
pub fn deletion_message(users: &[String]) -> String {
    format!(
        "deletion waits until no QWorker uses this ScalerConfig (their in-flight tasks are \
         returned through it); still used by: {}",
        users.join(", ")
    )
}

async fn publish(ctx: &Context, sc: &ScalerConfig, type_: EventType, reason: &str, note: &str) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "CheckBroker".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &sc.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish an Event");
    }
}

pub fn error_policy(
    sc: Arc<ScalerConfig>,
    err: &Error,
    ctx: Arc<Context>,
) -> kube::runtime::controller::Action {
    tracing::warn!(scalerconfig = %sc.name_any(), namespace = sc.namespace().unwrap_or_default(), error = %err, "reconcile failed");
    ctx.metrics.reconcile_failed("scalerconfig", err.kind());
    Action::requeue(std::time::Duration::from_secs(5))
}
