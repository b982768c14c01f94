//! `rollout status NAME`: watches the QWorker and speaks like `kubectl rollout status`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher::{self, watch_object};
use qscaler_crds::conditions::{self, reason};
use qscaler_crds::hash::pod_spec_hash;
use qscaler_crds::QWorker;

use super::{get_qworker, qworkers};
use crate::cli::StatusArgs;
use crate::client::Ctx;
use crate::duration::format_duration;
use crate::error::{resource, Action, Error, Result};

/// Where a rollout stands, with the words to say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not finished yet.
    Waiting(String),
    /// Every worker runs the current pod spec and is available.
    Done(String),
    /// The operator refuses the spec: it will never roll out as it is.
    Invalid(String),
}

/// The state of a QWorker's rollout, as kubectl's deployment status viewer decides it, from the
/// counts the operator writes into status, worded as kubectl words a deployment's (the resource
/// named in every line, so that several rollouts followed at once can be told apart).
pub fn state(qw: &QWorker) -> State {
    let name = qw.metadata.name.as_deref().unwrap_or_default();
    let unobserved = State::Waiting(format!(
        "Waiting for qworker \"{name}\" spec update to be observed..."
    ));
    let Some(status) = &qw.status else {
        return unobserved;
    };
    let find = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    if let Some(c) = find(conditions::SPEC_VALID).filter(|c| c.status == "False") {
        let why = if c.message.is_empty() {
            c.reason.as_str()
        } else {
            c.message.as_str()
        };
        return State::Invalid(why.to_owned());
    }
    let observed = status.observed_generation.unwrap_or(0);
    let stale_hash = status.current_pod_spec_hash != pod_spec_hash(&qw.spec).full();
    if observed < qw.metadata.generation.unwrap_or(0) || stale_hash {
        return unobserved;
    }
    let crashing = find(conditions::WORKERS_CRASHING)
        .filter(|c| c.status == "True")
        .map(|c| {
            format!(
                " (workers are crashing: {})",
                if c.message.is_empty() {
                    reason::CRASH_LOOP
                } else {
                    &c.message
                }
            )
        })
        .unwrap_or_default();
    let waiting = |what: String| {
        State::Waiting(format!(
            "Waiting for qworker \"{name}\" rollout to finish: {what}...{crashing}"
        ))
    };
    let (desired, updated, available, old) = (
        status.desired_replicas,
        status.updated_replicas,
        status.available_replicas,
        status.old_replicas,
    );
    if updated < desired {
        waiting(format!(
            "{updated} out of {desired} new workers have been updated"
        ))
    } else if old > 0 {
        waiting(format!(
            "{old} old {} draining",
            if old == 1 { "worker is" } else { "workers are" }
        ))
    } else if available < updated {
        waiting(format!(
            "{available} of {updated} updated workers are available"
        ))
    } else {
        State::Done(format!("qworker \"{name}\" successfully rolled out"))
    }
}

pub async fn run(ctx: &Ctx, args: &StatusArgs, out: &mut impl Write) -> Result<ExitCode> {
    let qw = get_qworker(ctx, &args.name).await?;
    let first = state(&qw);
    if !args.watch {
        // As kubectl: print the state once, exit 0 whether or not it is finished.
        return report(&args.name, &first, out).map(|_| ExitCode::SUCCESS);
    }
    let mut last = None;
    let follow = follow(ctx, &args.name, first, &mut last, out);
    if args.timeout.is_zero() {
        return follow.await;
    }
    match tokio::time::timeout(args.timeout, follow).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(&args.name, args.timeout, last)),
    }
}

fn timed_out(name: &str, timeout: Duration, last: Option<State>) -> Error {
    let last = match last {
        Some(State::Waiting(m) | State::Done(m) | State::Invalid(m)) => m,
        None => "unknown".into(),
    };
    Error::Timeout {
        name: name.to_owned(),
        timeout: format_duration(timeout),
        last,
    }
}

/// Prints each new state until the rollout is done or cannot be.
async fn follow(
    ctx: &Ctx,
    name: &str,
    first: State,
    last: &mut Option<State>,
    out: &mut impl Write,
) -> Result<ExitCode> {
    if let Some(code) = step(name, first, last, out)? {
        return Ok(code);
    }
    let action = Action::new("watch", resource::QWORKERS)
        .named(name)
        .in_namespace(Some(&ctx.namespace));
    let mut events = watch_object(qworkers(ctx), name).boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            // The watch fell too far behind (410 Gone): the watcher lists again on the next poll.
            Err(watcher::Error::WatchError(status)) if status.code == 410 => continue,
            Err(e) => return Err(watch_error(&action, e)),
            Ok(event) => event,
        };
        let Some(qw) = event else {
            return Err(Error::Deleted {
                name: name.to_owned(),
            });
        };
        let state = state(&qw);
        tracing::debug!(?state, resource_version = ?qw.metadata.resource_version, "watch event");
        if let Some(code) = step(name, state, last, out)? {
            return Ok(code);
        }
    }
    Err(Error::Deleted {
        name: name.to_owned(),
    })
}

/// Says a state if it is new; `Some(exit code)` once there is nothing more to wait for.
fn step(
    name: &str,
    state: State,
    last: &mut Option<State>,
    out: &mut impl Write,
) -> Result<Option<ExitCode>> {
    if last.as_ref() != Some(&state) {
        report(name, &state, out)?;
    }
    let done = match &state {
        State::Done(_) => Some(ExitCode::SUCCESS),
        State::Waiting(_) => None,
        State::Invalid(_) => None,
    };
    *last = Some(state);
    Ok(done)
}

/// Prints a state; an invalid spec becomes the error.
fn report(name: &str, state: &State, out: &mut impl Write) -> Result<()> {
    match state {
        State::Waiting(m) | State::Done(m) => {
            writeln!(out, "{m}")?;
            out.flush()?;
            Ok(())
        }
        State::Invalid(message) => Err(Error::InvalidSpec {
            name: name.to_owned(),
            message: message.clone(),
        }),
    }
}

fn watch_error(action: &Action, err: watcher::Error) -> Error {
    match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => Error::from_kube(action, e),
        watcher::Error::WatchError(status) => Error::from_kube(action, kube::Error::Api(status)),
        other => Error::from_kube(action, kube::Error::Service(Box::new(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{condition, qworker};

    fn waiting(what: &str) -> State {
        State::Waiting(format!(
            "Waiting for qworker \"mail\" rollout to finish: {what}..."
        ))
    }

    fn unobserved() -> State {
        State::Waiting("Waiting for qworker \"mail\" spec update to be observed...".into())
    }

    #[test]
    fn before_the_operator_has_seen_the_spec() {
        assert_eq!(state(&qworker("mail").build()), unobserved());
        let old_generation = qworker("mail")
            .generation(1)
            .status(|_| {})
            .generation(2)
            .build();
        assert_eq!(state(&old_generation), unobserved());
        let other_hash = qworker("mail")
            .status(|s| s.current_pod_spec_hash = "0123456789abcdef".into())
            .build();
        assert_eq!(state(&other_hash), unobserved());
        // Another QWorker's lines name that one.
        assert_eq!(
            state(&qworker("thumbs").build()),
            State::Waiting("Waiting for qworker \"thumbs\" spec update to be observed...".into())
        );
    }

    #[test]
    fn every_waiting_state_speaks_like_kubectl() {
        let with =
            |f: fn(&mut qscaler_crds::QWorkerStatus)| state(&qworker("mail").status(f).build());
        assert_eq!(
            with(|s| (s.desired_replicas, s.updated_replicas) = (3, 1)),
            waiting("1 out of 3 new workers have been updated")
        );
        assert_eq!(
            with(|s| (s.desired_replicas, s.updated_replicas, s.old_replicas) = (3, 3, 2)),
            waiting("2 old workers are draining")
        );
        assert_eq!(
            with(|s| (s.desired_replicas, s.updated_replicas, s.old_replicas) = (3, 3, 1)),
            waiting("1 old worker is draining")
        );
        assert_eq!(
            with(|s| (s.desired_replicas, s.updated_replicas, s.available_replicas) = (3, 3, 1)),
            waiting("1 of 3 updated workers are available")
        );
    }

    #[test]
    fn done_when_all_updated_workers_are_available_and_no_old_ones_left() {
        let done = State::Done("qworker \"mail\" successfully rolled out".into());
        let s = |d, u, a| {
            state(
                &qworker("mail")
                    .status(|s| {
                        (s.desired_replicas, s.updated_replicas, s.available_replicas) = (d, u, a)
                    })
                    .build(),
            )
        };
        assert_eq!(s(3, 3, 3), done);
        // Scaled to zero: nothing to roll out.
        assert_eq!(s(0, 0, 0), done);
        // Surge: more updated than desired is fine once they are available.
        assert_eq!(s(2, 3, 3), done);
    }

    #[test]
    fn an_invalid_spec_is_final_and_crashing_workers_are_mentioned() {
        let invalid = qworker("mail")
            .status(|s| {
                s.conditions.push(condition(
                    conditions::SPEC_VALID,
                    "False",
                    reason::INVALID_SPEC,
                    "maxReplicas < minReplicas",
                ))
            })
            .build();
        assert_eq!(
            state(&invalid),
            State::Invalid("maxReplicas < minReplicas".into())
        );
        let crashing = qworker("mail")
            .status(|s| {
                (s.desired_replicas, s.updated_replicas) = (2, 2);
                s.conditions.push(condition(
                    conditions::WORKERS_CRASHING,
                    "True",
                    reason::CRASH_LOOP,
                    "exit code 3",
                ));
            })
            .build();
        assert_eq!(
            state(&crashing),
            State::Waiting(
                "Waiting for qworker \"mail\" rollout to finish: 0 of 2 updated workers are available... (workers are crashing: exit code 3)".into()
            )
        );
    }

    #[test]
    fn each_state_is_said_once_and_done_ends_it() {
        let mut out = Vec::new();
        let mut last = None;
        let w = waiting("1 of 2 updated workers are available");
        assert_eq!(step("mail", w.clone(), &mut last, &mut out).unwrap(), None);
        assert_eq!(step("mail", w, &mut last, &mut out).unwrap(), None);
        let done = State::Done("qworker \"mail\" successfully rolled out".into());
        assert_eq!(
            step("mail", done, &mut last, &mut out).unwrap(),
            Some(ExitCode::SUCCESS)
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Waiting for qworker \"mail\" rollout to finish: 1 of 2 updated workers are available...\nqworker \"mail\" successfully rolled out\n"
        );
        let err = step(
            "mail",
            State::Invalid("bad".into()),
            &mut last,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "qworker \"mail\" has an invalid spec, so it cannot roll out: bad"
        );
    }

    #[test]
    fn a_timeout_says_how_long_and_where_it_stood() {
        let err = timed_out(
            "mail",
            Duration::from_secs(90),
            Some(waiting("2 old workers are draining")),
        );
        assert_eq!(
            err.to_string(),
            "timed out after 1m30s waiting for qworker \"mail\" to roll out; last state: Waiting for qworker \"mail\" rollout to finish: 2 old workers are draining..."
        );
    }
}
