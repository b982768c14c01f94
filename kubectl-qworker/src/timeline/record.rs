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
/// How long the last sample, taken at Ctrl-C, may take.
const LAST_SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn record(
    ctx: &Ctx,
    name: &str,
    duration: Option<Duration>,
    interval: Duration,
) -> Result<Recording> {
    let ns = ctx.namespace.as_str();
    let get = Action::new("get", resource::QWORKERS)
        .named(name)
        .in_namespace(Some(ns));
    // The QWorker must exist before anything is recorded.
    Api::<QWorker>::namespaced(ctx.client.clone(), ns)
        .get(name)
        .await
        .ctx(&get)?;
    // Installed before the first line, so that a signal right after it already ends the recording.
    let stop = stop_requested()?;
    tokio::pin!(stop);
    let mut r = Recorder::new(ctx, name);
    eprintln!(
        "recording qworker {ns}/{name} every {} {} into a timeline",
        format_duration(interval),
        match duration {
            Some(d) => format!("for {}", format_duration(d)),
            None => "until Ctrl-C".into(),
        }
    );
    let mut next_progress = PROGRESS_EVERY;
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    let stopped = loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut stop => break true,
        }
        let taken = tokio::select! {
            taken = r.sample() => taken,
            () = &mut stop => break true,
        };
        if taken == Taken::Deleted {
            eprintln!("qworker {ns}/{name} was deleted; the recording ends here");
            break false;
        }
        let elapsed = r.clock.elapsed();
        if elapsed >= next_progress {
            next_progress += PROGRESS_EVERY;
            eprintln!("  {}", r.summary());
        }
        if duration.is_some_and(|d| elapsed >= d) {
            break false;
        }
    };
    if stopped {
        // The picture ends with the state at Ctrl-C, not at the tick before it.
        let _ = tokio::time::timeout(LAST_SAMPLE_TIMEOUT, r.sample()).await;
    }
    eprintln!("recorded {}", r.summary());
    Ok(r.rec)
}

/// What one round of reading found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    Sample,
    /// The API server did not answer well; the round is skipped.
    Skipped,
    Deleted,
}

/// The APIs read and what has been recorded so far.
struct Recorder<'a> {
    name: &'a str,
    namespace: &'a str,
    qworkers: Api<QWorker>,
    pods: Api<Pod>,
    events: Api<Event>,
    pod_params: ListParams,
    event_params: ListParams,
    started: Timestamp,
    clock: Instant,
    rec: Recording,
    pods_seen: BTreeSet<String>,
    /// `(uid, occurrence)` of every Event listed so far.
    seen_events: HashSet<(String, i32)>,
    events_failed: bool,
}

impl<'a> Recorder<'a> {
    fn new(ctx: &'a Ctx, name: &'a str) -> Recorder<'a> {
        let ns = ctx.namespace.as_str();
        let started = Timestamp::now();
        Recorder {
            name,
            namespace: ns,
            qworkers: Api::namespaced(ctx.client.clone(), ns),
            pods: Api::namespaced(ctx.client.clone(), ns),
            events: Api::namespaced(ctx.client.clone(), ns),
            pod_params: ListParams::default().labels(&format!("{LABEL_QWORKER}={name}")),
            event_params: ListParams::default().fields(&format!("involvedObject.name={name}")),
            started,
            clock: Instant::now(),
            rec: Recording {
                namespace: ns.to_owned(),
                qworker: name.to_owned(),
                started: format!("{started:.0}"),
                ..Recording::default()
            },
            pods_seen: BTreeSet::new(),
            seen_events: HashSet::new(),
            events_failed: false,
        }
    }

    /// Reads the QWorker, its pods and new Events once.
    async fn sample(&mut self) -> Taken {
        let t = self.clock.elapsed().as_secs_f64();
        let fetched = tokio::try_join!(
            self.qworkers.get_opt(self.name),
            self.pods.list(&self.pod_params)
        );
        let (qw, pods) = match fetched {
            Ok(v) => v,
            // A hiccup of the API server costs a sample, not the recording.
            Err(e) => {
                let action = Action::new("list", resource::PODS).in_namespace(Some(self.namespace));
                let err = Error::from_kube(&action, e);
                tracing::warn!(error = %err, "skipping a sample");
                eprintln!("warning: skipping a sample: {err}");
                return Taken::Skipped;
            }
        };
        let Some(qw) = qw else {
            return Taken::Deleted;
        };
        let sample = observe(t, &qw, &pods.items);
        self.pods_seen
            .extend(sample.pods.iter().map(|p| p.name.clone()));
        self.rec.samples.push(sample);
        match self.new_events().await {
            Ok(new) => {
                let (started, name) = (self.started, self.name);
                self.rec
                    .events
                    .extend(new.iter().filter_map(|e| marker(started, name, e)));
            }
            Err(e) if !self.events_failed => {
                self.events_failed = true;
                let action = Action::new("list", "events").in_namespace(Some(self.namespace));
                eprintln!(
                    "warning: no Event markers: {}",
                    Error::from_kube(&action, e)
                );
            }
            Err(_) => {}
        }
        Taken::Sample
    }

    /// The Events about the QWorker (by the field selector) not seen before; an Event that
    /// repeats (a series) is new again with each occurrence.
    async fn new_events(&mut self) -> Result<Vec<Event>, kube::Error> {
        let list = self.events.list(&self.event_params).await?;
        let seen = &mut self.seen_events;
        Ok(list
            .items
            .into_iter()
            .filter(|e| seen.insert((e.metadata.uid.clone().unwrap_or_default(), occurrences(e))))
            .collect())
    }

    fn summary(&self) -> String {
        format!(
            "{}: {} samples, {} pods, {} events",
            format_duration(Duration::from_secs(self.clock.elapsed().as_secs())),
            self.rec.samples.len(),
            self.pods_seen.len(),
            self.rec.events.len()
        )
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM: both end the recording and still write the picture.
/// The handlers are installed when this is called, not when the future is first polled.
fn stop_requested() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler = |kind| signal(kind).map_err(super::Error::Signals);
    let mut interrupt = handler(SignalKind::interrupt())?;
    let mut terminate = handler(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
