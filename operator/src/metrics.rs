//! Prometheus metrics, hand-written text exposition (format 0.0.4): a handful of gauges, counters and
//! one histogram do not need a registry crate. Every series has its labels rendered once, sorted.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Labels = Vec<(&'static str, String)>;

/// Upper bounds of the reconcile-duration histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

struct Family {
    help: &'static str,
    kind: &'static str,
}

const FAMILIES: &[(&str, Family)] = &[
    (
        "qscaler_queue_depth",
        Family {
            help: "Tasks waiting in the queue at the last poll.",
            kind: "gauge",
        },
    ),
    (
        "qscaler_queue_in_flight",
        Family {
            help: "Tasks taken by task-mode workers and not finished.",
            kind: "gauge",
        },
    ),
    (
        "qscaler_desired_replicas",
        Family {
            help: "Workers the scaling rule asks for.",
            kind: "gauge",
        },
    ),
    (
        "qscaler_current_replicas",
        Family {
            help: "Worker pods alive, draining ones included.",
            kind: "gauge",
        },
    ),
    (
        "qscaler_draining_replicas",
        Family {
            help: "Worker pods told to drain.",
            kind: "gauge",
        },
    ),
    (
        "qscaler_broker_healthy",
        Family {
            help: "1 when the ScalerConfig's broker answered the last check.",
            kind: "gauge",
        },
    ),
    (
        "qscaler_reconciles_total",
        Family {
            help: "Reconciles run, by controller.",
            kind: "counter",
        },
    ),
    (
        "qscaler_reconcile_errors_total",
        Family {
            help: "Reconciles that failed, by controller and error kind.",
            kind: "counter",
        },
    ),
    (
        "qscaler_pods_created_total",
        Family {
            help: "Worker pods created.",
            kind: "counter",
        },
    ),
    (
        "qscaler_pods_drained_total",
        Family {
            help: "Drain annotations set, by reason.",
            kind: "counter",
        },
    ),
    (
        "qscaler_pods_undrained_total",
        Family {
            help: "Drain annotations removed because demand rose again.",
            kind: "counter",
        },
    ),
    (
        "qscaler_pods_deleted_total",
        Family {
            help: "Worker pods deleted, by reason.",
            kind: "counter",
        },
    ),
    (
        "qscaler_tasks_returned_total",
        Family {
            help: "In-flight tasks of dead pods returned to their queue.",
            kind: "counter",
        },
    ),
    (
        "qscaler_tasks_dead_lettered_total",
        Family {
            help: "In-flight tasks of dead pods moved to the dead-letter list: their pods died more often than the retry limit allows.",
            kind: "counter",
        },
    ),
    (
        "qscaler_reconcile_duration_seconds",
        Family {
            help: "Time spent in one reconcile, by controller.",
            kind: "histogram",
        },
    ),
];

#[derive(Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<(&'static str, Labels), f64>>,
    histograms: Mutex<BTreeMap<(&'static str, Labels), Histogram>>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    let mut l: Labels = pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
    l.sort();
    l
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_labels(l: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

impl Metrics {
    pub fn set(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        if let Ok(mut v) = self.values.lock() {
            v.insert((name, labels(pairs)), value);
        }
    }

    pub fn inc(&self, name: &'static str, pairs: &[(&'static str, &str)], by: f64) {
        if let Ok(mut v) = self.values.lock() {
            *v.entry((name, labels(pairs))).or_insert(0.0) += by;
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

    /// Drops every series of `name` whose labels include `pair` (a deleted QWorker's gauges).
    pub fn forget(&self, pairs: &[(&'static str, &str)]) {
        let want = labels(pairs);
        if let Ok(mut v) = self.values.lock() {
            v.retain(|(_, l), _| !want.iter().all(|p| l.contains(p)));
        }
    }

    pub fn observe(&self, name: &'static str, pairs: &[(&'static str, &str)], d: Duration) {
        let secs = d.as_secs_f64();
        if let Ok(mut h) = self.histograms.lock() {
            let h = h.entry((name, labels(pairs))).or_default();
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS.len()];
            }
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    /// The text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let values = self.values.lock().map(|v| {
            v.iter()
                .map(|((n, l), x)| (*n, l.clone(), *x))
                .collect::<Vec<_>>()
        });
        let values = values.unwrap_or_default();
        for (family, meta) in FAMILIES {
            let _ = writeln!(out, "# HELP {family} {}", meta.help);
            let _ = writeln!(out, "# TYPE {family} {}", meta.kind);
            if meta.kind == "histogram" {
                if let Ok(hs) = self.histograms.lock() {
                    for ((n, l), h) in hs.iter().filter(|((n, _), _)| n == family) {
                        for (i, b) in BUCKETS.iter().enumerate() {
                            let _ = writeln!(
                                out,
                                "{n}_bucket{} {}",
                                render_labels(l, Some(("le", b.to_string()))),
                                h.counts[i]
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{n}_bucket{} {}",
                            render_labels(l, Some(("le", "+Inf".into()))),
                            h.count
                        );
                        let _ = writeln!(out, "{n}_sum{} {}", render_labels(l, None), h.sum);
                        let _ = writeln!(out, "{n}_count{} {}", render_labels(l, None), h.count);
                    }
                }
                continue;
            }
            for (n, l, x) in values.iter().filter(|(n, _, _)| n == family) {
                let _ = writeln!(out, "{n}{} {x}", render_labels(l, None));
            }
        }
        out
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
        assert!(text.contains("qscaler_pods_created_total{namespace=\"n\",qworker=\"w\"} 3\n"));
        assert!(text.contains(
            "qscaler_reconcile_duration_seconds_bucket{controller=\"qworker\",le=\"0.05\"} 1\n"
        ));
        assert!(text.contains(
            "qscaler_reconcile_duration_seconds_bucket{controller=\"qworker\",le=\"0.025\"} 0\n"
        ));
        assert!(
            text.contains("qscaler_reconcile_duration_seconds_count{controller=\"qworker\"} 1\n")
        );
        assert!(text.contains("# TYPE qscaler_reconciles_total counter\n"));
        m.forget(&[("qworker", "w"), ("namespace", "n")]);
        assert!(!m.render().contains("qscaler_queue_depth{"));
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
        m.set("qscaler_queue_depth", &[("qworker", "a\"b")], 1.0);
        assert!(m.render().contains("qworker=\"a\\\"b\""));
    }
}
