//! Prometheus metrics on `prometheus-client`: every metric is a typed family registered once, and the
//! exposition (OpenMetrics text) is the registry's. A name that no family has is logged, never dropped
//! silently, and a unit test checks every `qscaler_*` name used in the operator's sources is registered.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// One series' labels, sorted by name.
type Labels = Vec<(String, String)>;

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the reconcile-duration histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Gauges: counts at the last poll or reconcile. Help texts end without a period: the encoder adds one.
const GAUGES: &[(&str, &str)] = &[
    (
        "qscaler_queue_depth",
        "Tasks waiting in the queue at the last poll",
    ),
    (
        "qscaler_queue_in_flight",
        "Tasks taken by task-mode workers and not finished",
    ),
    (
        "qscaler_desired_replicas",
        "Workers the scaling rule asks for",
    ),
    (
        "qscaler_current_replicas",
        "Worker pods alive, draining ones included",
    ),
    ("qscaler_draining_replicas", "Worker pods told to drain"),
    (
        "qscaler_broker_healthy",
        "1 when the ScalerConfig's broker answered the last check",
    ),
];

/// Counters, by their exposed name (OpenMetrics: the family is the name without `_total`).
const COUNTERS: &[(&str, &str)] = &[
    ("qscaler_reconciles_total", "Reconciles run, by controller"),
    (
        "qscaler_reconcile_errors_total",
        "Reconciles that failed, by controller and error kind",
    ),
    ("qscaler_pods_created_total", "Worker pods created"),
    (
        "qscaler_pods_drained_total",
        "Drain annotations set, by reason",
    ),
    (
        "qscaler_pods_undrained_total",
        "Drain annotations removed because demand rose again",
    ),
    (
        "qscaler_pods_deleted_total",
        "Worker pods deleted, by reason",
    ),
    (
        "qscaler_tasks_returned_total",
        "In-flight tasks of dead pods returned to their queue",
    ),
    (
        "qscaler_tasks_dead_lettered_total",
        "In-flight tasks of dead pods moved to the dead-letter list: their pods died more often than the retry limit allows",
    ),
    (
        "qscaler_queue_reads_total",
        "Poller ticks that read the queues, by ScalerConfig and result (ok, error)",
    ),
    (
        "qscaler_poller_wakes_total",
        "Poller ticks started early by a keyspace notification of a push",
    ),
    (
        "qscaler_status_writes_total",
        "QWorker status writes, by result (written, deferred: a depth-only change held back)",
    ),
];

const HISTOGRAMS: &[(&str, &str)] = &[(
    "qscaler_reconcile_duration_seconds",
    "Time spent in one reconcile, by controller",
)];

/// Histogram families build their histograms with [`reconcile_histogram`]'s buckets.
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn reconcile_histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

pub struct Metrics {
    registry: Registry,
    gauges: HashMap<&'static str, Family<Labels, Gauge>>,
    counters: HashMap<&'static str, Family<Labels, Counter>>,
    histograms: HashMap<&'static str, HistogramFamily>,
    /// Every series written, so that [`Metrics::forget`] can find a deleted QWorker's.
    series: Mutex<BTreeSet<(&'static str, Labels)>>,
    /// Names asked for that no family has (each logged once).
    unknown: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut gauges = HashMap::new();
        for (name, help) in GAUGES {
            let family = Family::<Labels, Gauge>::default();
            registry.register(*name, *help, family.clone());
            gauges.insert(*name, family);
        }
        let mut counters = HashMap::new();
        for (name, help) in COUNTERS {
            let family = Family::<Labels, Counter>::default();
            let base = name.strip_suffix("_total").unwrap_or(name);
            registry.register(base, *help, family.clone());
            counters.insert(*name, family);
        }
        let mut histograms = HashMap::new();
        for (name, help) in HISTOGRAMS {
            let family = HistogramFamily::new_with_constructor(reconcile_histogram);
            registry.register(*name, *help, family.clone());
            histograms.insert(*name, family);
        }
        Metrics {
            registry,
            gauges,
            counters,
            histograms,
            series: Mutex::default(),
            unknown: Mutex::default(),
        }
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    let mut l: Labels = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    l
}

impl Metrics {
    /// Sets gauge `name` (a count: stored as an integer).
    pub fn set(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        match self.gauges.get(name) {
            Some(family) => {
                let l = labels(pairs);
                family.get_or_create(&l).set(value.round() as i64);
                self.written(name, l);
            }
            None => self.unknown(name),
        }
    }

    /// Adds `by` (a whole number) to counter `name`.
    pub fn inc(&self, name: &'static str, pairs: &[(&'static str, &str)], by: f64) {
        match self.counters.get(name) {
            Some(family) => {
                let l = labels(pairs);
                family.get_or_create(&l).inc_by(by.max(0.0).round() as u64);
                self.written(name, l);
            }
            None => self.unknown(name),
        }
    }

    /// Runs one reconcile of `controller`, counting it and timing it.
    pub async fn reconcile<T>(&self, controller: &'static str, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = work.await;
        let pairs = [("controller", controller)];
        self.inc("qscaler_reconciles_total", &pairs, 1.0);
        self.observe(
            "qscaler_reconcile_duration_seconds",
            &pairs,
            started.elapsed(),
        );
        result
    }

    /// Counts a failed reconcile of `controller` by the kind of error.
    pub fn reconcile_failed(&self, controller: &'static str, kind: &str) {
        self.inc(
            "qscaler_reconcile_errors_total",
            &[("controller", controller), ("kind", kind)],
            1.0,
        );
    }

    /// Drops every series whose labels include all of `pairs` (a deleted QWorker's).
    pub fn forget(&self, pairs: &[(&'static str, &str)]) {
        let want = labels(pairs);
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.retain(|(name, l)| {
            if !want.iter().all(|p| l.contains(p)) {
                return true;
            }
            if let Some(f) = self.gauges.get(name) {
                f.remove(l);
            } else if let Some(f) = self.counters.get(name) {
                f.remove(l);
            } else if let Some(f) = self.histograms.get(name) {
                f.remove(l);
            }
            false
        });
    }

    /// Records `d` in histogram `name`.
    pub fn observe(&self, name: &'static str, pairs: &[(&'static str, &str)], d: Duration) {
        match self.histograms.get(name) {
            Some(family) => {
                let l = labels(pairs);
                family.get_or_create(&l).observe(d.as_secs_f64());
                self.written(name, l);
            }
            None => self.unknown(name),
        }
    }

    /// The OpenMetrics text exposition of every family ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }

    fn written(&self, name: &'static str, l: Labels) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.insert((name, l));
    }

    fn unknown(&self, name: &str) {
        let mut unknown = self.unknown.lock().unwrap_or_else(|e| e.into_inner());
        if unknown.insert(name.to_string()) {
            tracing::error!(
                metric = name,
                "no such metric is registered (operator bug): add it to metrics.rs"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_exposition() {
        let m = Metrics::default();
        m.set(
            "qscaler_queue_depth",
            &[("qworker", "w"), ("namespace", "n")],
            5.0,
        );
        m.inc(
            "qscaler_pods_created_total",
            &[("qworker", "w"), ("namespace", "n")],
            2.0,
        );
        m.inc(
            "qscaler_pods_created_total",
            &[("namespace", "n"), ("qworker", "w")],
            1.0,
        );
        m.observe(
            "qscaler_reconcile_duration_seconds",
            &[("controller", "qworker")],
            Duration::from_millis(30),
        );
        let text = m.render();
        assert!(
            text.contains("qscaler_queue_depth{namespace=\"n\",qworker=\"w\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("qscaler_pods_created_total{namespace=\"n\",qworker=\"w\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "qscaler_reconcile_duration_seconds_bucket{le=\"0.05\",controller=\"qworker\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "qscaler_reconcile_duration_seconds_bucket{le=\"0.025\",controller=\"qworker\"} 0\n"
        ));
        assert!(
            text.contains("qscaler_reconcile_duration_seconds_count{controller=\"qworker\"} 1\n")
        );
        assert!(
            text.contains("# TYPE qscaler_pods_created counter\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        m.forget(&[("qworker", "w"), ("namespace", "n")]);
        let text = m.render();
        assert!(!text.contains("qscaler_queue_depth{"), "{text}");
        assert!(!text.contains("qscaler_pods_created_total{"), "{text}");
        assert!(text.contains("qscaler_reconcile_duration_seconds_count{"));
    }

    #[test]
    fn every_registered_family_is_rendered_once_written() {
        let m = Metrics::default();
        assert_eq!(m.render(), "# EOF\n", "no series yet");
        let l = [("namespace", "n")];
        for (name, _) in GAUGES {
            m.set(name, &l, 2.0);
        }
        for (name, _) in COUNTERS {
            m.inc(name, &l, 1.0);
        }
        for (name, _) in HISTOGRAMS {
            m.observe(name, &l, Duration::from_millis(1));
        }
        let text = m.render();
        for (name, help) in GAUGES.iter().chain(HISTOGRAMS) {
            assert!(
                text.contains(&format!("# HELP {name} {help}.\n")),
                "{name}: {text}"
            );
        }
        for (name, _) in GAUGES {
            assert!(
                text.contains(&format!("{name}{{namespace=\"n\"}} 2\n")),
                "{text}"
            );
        }
        for (name, _) in COUNTERS {
            let base = name.strip_suffix("_total").expect("counters end in _total");
            assert!(text.contains(&format!("# TYPE {base} counter\n")), "{text}");
            assert!(
                text.contains(&format!("{name}{{namespace=\"n\"}} 1\n")),
                "{text}"
            );
        }
    }

    #[test]
    fn a_reconcile_is_counted_and_timed_and_a_failure_counted_by_kind() {
        let m = Metrics::default();
        let out = futures::executor::block_on(m.reconcile("qworker", async { 7 }));
        assert_eq!(out, 7);
        m.reconcile_failed("qworker", "kube");
        let text = m.render();
        assert!(
            text.contains("qscaler_reconciles_total{controller=\"qworker\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("qscaler_reconcile_duration_seconds_count{controller=\"qworker\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("qscaler_reconcile_errors_total{controller=\"qworker\",kind=\"kube\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.set("qscaler_queue_depth", &[("qworker", "a\"b\\c\nd")], 1.0);
        assert!(
            m.render().contains("qworker=\"a\\\"b\\\\c\\nd\""),
            "{}",
            m.render()
        );
    }

    #[test]
    fn an_unknown_name_writes_nothing_and_is_remembered() {
        let m = Metrics::default();
        let before = m.render();
        m.set("qscaler_no_such_gauge", &[], 1.0);
        m.inc("qscaler_no_such_total", &[], 1.0);
        assert_eq!(m.render(), before);
        let unknown = m.unknown.lock().expect("lock");
        assert!(unknown.contains("qscaler_no_such_gauge"));
        assert!(unknown.contains("qscaler_no_such_total"));
    }

    /// Every `"qscaler_…"` string in the operator's sources names a registered metric: a metric used
    /// but never registered (the old hand-written exposition silently left it out) fails here.
    #[test]
    fn every_metric_name_in_the_sources_is_registered() {
        let known: HashSet<&str> = GAUGES
            .iter()
            .chain(COUNTERS)
            .chain(HISTOGRAMS)
            .map(|(n, _)| *n)
            .collect();
        let mut stack = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("src dir") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().and_then(|e| e.to_str()) != Some("rs")
                    || path.ends_with("metrics.rs")
                {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("source");
                for (i, _) in text.match_indices("\"qscaler_") {
                    let rest = &text[i + 1..];
                    let end = rest
                        .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                        .unwrap_or(rest.len());
                    if rest[end..].starts_with('"') {
                        let name = &rest[..end];
                        assert!(known.contains(name), "{}: {name}", path.display());
                        seen += 1;
                    }
                }
            }
        }
        assert!(
            seen >= 8,
            "only {seen} metric names found: is the scan right?"
        );
    }
}
