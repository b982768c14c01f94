//! Recording: the QWorker, its pods and its Events, read every `--interval` until `--for` has
//! passed, Ctrl-C or SIGTERM, or the QWorker is deleted. Progress goes to stderr.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::Api;
use qscaler_crds::names::LABEL_QWORKER;
use qscaler_crds::QWorker;

use super::samples::{marker, observe, occurrences, Recording};
use crate::client::Ctx;
use crate::duration::format_duration;
use crate::error::{resource, Action, Context, Error, Result};

/// A progress line on stderr this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub async fn record(
    ctx: &Ctx,
    name: &str,
    duration: Option<Duration>,
    interval: Duration,
) -> Result<Recording> {
    let ns = ctx.namespace.as_str();
    let qworkers: Api<QWorker> = Api::namespaced(ctx.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), ns);
    let get = Action::new("get", resource::QWORKERS)
        .named(name)
        .in_namespace(Some(ns));
    let list_pods = Action::new("list", resource::PODS).in_namespace(Some(ns));
    let pod_params = ListParams::default().labels(&format!("{LABEL_QWORKER}={name}"));
    let event_params = ListParams::default().fields(&format!("involvedObject.name={name}"));

    // The QWorker must exist before anything is recorded.
    qworkers.get(name).await.ctx(&get)?;
    let started = Timestamp::now();
    let clock = Instant::now();
    let mut rec = Recording {
        namespace: ns.to_owned(),
        qworker: name.to_owned(),
        started: format!("{started:.0}"),
        ..Recording::default()
    };
    eprintln!(
        "recording qworker {ns}/{name} every {} {} into a timeline",
        format_duration(interval),
        match duration {
            Some(d) => format!("for {}", format_duration(d)),
            None => "until Ctrl-C".into(),
        }
    );
    let mut seen_events: HashSet<(String, i32)> = HashSet::new();
    let mut pods_seen: BTreeSet<String> = BTreeSet::new();
    let mut events_failed = false;
    let mut next_progress = PROGRESS_EVERY;
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stop = stop_requested();
    tokio::pin!(stop);

    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut stop => break,
        }
        let t = clock.elapsed().as_secs_f64();
        let fetched = tokio::select! {
            r = async { tokio::try_join!(qworkers.get_opt(name), pods.list(&pod_params)) } => r,
            () = &mut stop => break,
        };
        let (qw, pod_list) = match fetched {
            Ok(v) => v,
            // A hiccup of the API server costs a sample, not the recording.
            Err(e) => {
                let err = Error::from_kube(&list_pods, e);
                tracing::warn!(error = %err, "skipping a sample");
                eprintln!("warning: skipping a sample: {err}");
                continue;
            }
        };
        let Some(qw) = qw else {
            eprintln!("qworker {ns}/{name} was deleted; the recording ends here");
            break;
        };
        let sample = observe(t, &qw, &pod_list.items);
        pods_seen.extend(sample.pods.iter().map(|p| p.name.clone()));
        rec.samples.push(sample);

        match events.list(&event_params).await {
            Ok(list) => {
                for event in &list.items {
                    let uid = event.metadata.uid.clone().unwrap_or_default();
                    if seen_events.insert((uid, occurrences(event))) {
                        rec.events.extend(marker(started, name, event));
                    }
                }
            }
            Err(e) if !events_failed => {
                events_failed = true;
                let err =
                    Error::from_kube(&Action::new("list", "events").in_namespace(Some(ns)), e);
                eprintln!("warning: no Event markers: {err}");
            }
            Err(_) => {}
        }

        let elapsed = clock.elapsed();
        if elapsed >= next_progress {
            next_progress += PROGRESS_EVERY;
            eprintln!(
                "  {}: {} samples, {} pods seen, {} events",
                format_duration(Duration::from_secs(elapsed.as_secs())),
                rec.samples.len(),
                pods_seen.len(),
                rec.events.len()
            );
        }
        if duration.is_some_and(|d| elapsed >= d) {
            break;
        }
    }
    eprintln!(
        "recorded {}: {} samples, {} pods, {} events",
        format_duration(Duration::from_secs(clock.elapsed().as_secs())),
        rec.samples.len(),
        pods_seen.len(),
        rec.events.len()
    );
    Ok(rec)
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM: both end the recording and still write the picture.
async fn stop_requested() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
