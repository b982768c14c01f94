//! The tables of `top`: first the QWorkers, then their workers.
//!
//! A usage cell reads `NOW/PEAK (req R, rec V, lim L)`: use at the last report and the peak since the
//! container started, against its requests, the vertical-sizing recommendation (with `activateVPA`)
//! and its limits. `<none reported>` until the supervisor has written a report.

use std::io::Write;

use super::rows::{QWorkerRow, Report, Revision, Usage, WorkerRow};
use crate::table::Table;
use qscaler_crds::quantity::{display_bytes, format_cpu};

/// Which columns to show.
#[derive(Clone, Copy, Debug, Default)]
pub struct View {
    /// `-A`: a NAMESPACE column.
    pub all_namespaces: bool,
    /// A single QWorker was asked for: no QWORKER column on workers.
    pub single: bool,
    /// `--containers`: a CONTAINER column.
    pub containers: bool,
    /// Not `--no-headers`.
    pub headers: bool,
}

pub fn write_top(
    out: &mut impl Write,
    qworkers: &[QWorkerRow],
    workers: &[WorkerRow],
    view: View,
) -> std::io::Result<()> {
    qworker_table(qworkers, view).write(out, view.headers)?;
    writeln!(out)?;
    if workers.is_empty() {
        return writeln!(out, "No worker pods.");
    }
    worker_table(workers, view).write(out, view.headers)
}

fn qworker_table(rows: &[QWorkerRow], view: View) -> Table {
    let mut header = vec![
        "NAME",
        "QUEUE",
        "IN-FLIGHT",
        "TASK-TIME",
        "DESIRED",
        "CURRENT",
        "UPDATED",
        "DRAINING",
    ];
    if view.all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut table = Table::new(&header);
    for r in rows {
        let mut cells = vec![
            r.name.clone(),
            optional(r.queue),
            optional(r.in_flight),
            seconds(r.task_seconds),
            desired(r),
            r.current.to_string(),
            r.updated.to_string(),
            r.draining.to_string(),
        ];
        if view.all_namespaces {
            cells.insert(0, r.namespace.clone());
        }
        table.push(cells);
    }
    table
}

fn worker_table(rows: &[WorkerRow], view: View) -> Table {
    let mut header = Vec::new();
    if view.all_namespaces {
        header.push("NAMESPACE");
    }
    if !view.single {
        header.push("QWORKER");
    }
    header.push("POD");
    if view.containers {
        header.push("CONTAINER");
    }
    header.extend(["HASH", "STATUS", "CPU(NOW/PEAK)", "MEMORY(NOW/PEAK)"]);
    let mut table = Table::new(&header);
    for r in rows {
        let mut cells = Vec::new();
        if view.all_namespaces {
            cells.push(r.namespace.clone());
        }
        if !view.single {
            cells.push(r.qworker.clone());
        }
        cells.push(r.pod.clone());
        if view.containers {
            cells.push(r.container.clone().unwrap_or_default());
        }
        let revision = match r.revision {
            Revision::Current => "current",
            Revision::Old => "old",
        };
        cells.push(format!(
            "{} ({revision})",
            if r.hash.is_empty() { "<none>" } else { &r.hash }
        ));
        cells.push(r.status.clone());
        cells.push(usage_cell(&r.cpu, format_cpu));
        cells.push(usage_cell(&r.memory, display_bytes));
        table.push(cells);
    }
    table
}

/// `3`, or `3 (Paused)` when a control holds the count.
fn desired(r: &QWorkerRow) -> String {
    match &r.held_by {
        Some(why) => format!("{} ({why})", r.desired),
        None => r.desired.to_string(),
    }
}

/// `1.25s`; `-` when nothing was learned (no timed tasks, or not task mode).
fn seconds(v: Option<f64>) -> String {
    match v {
        Some(s) if s.is_finite() && s >= 10.0 => format!("{s:.0}s"),
        Some(s) if s.is_finite() => format!("{s:.2}s"),
        _ => "-".into(),
    }
}

fn optional(v: Option<i64>) -> String {
    v.map_or_else(|| "<unknown>".into(), |v| v.to_string())
}

/// `120m/250m (req 500m, lim 1)`.
pub fn usage_cell(u: &Usage, format: fn(u64) -> String) -> String {
    let used = match u.report {
        Report::Reported => format!(
            "{}/{}",
            u.now.map_or_else(|| "-".into(), format),
            u.peak.map_or_else(|| "-".into(), format)
        ),
        Report::NoneYet => "<none reported>".into(),
        Report::Malformed => "<unreadable report>".into(),
    };
    let against: Vec<String> = [("req", u.request), ("rec", u.recommended), ("lim", u.limit)]
        .into_iter()
        .filter_map(|(word, v)| v.map(|v| format!("{word} {}", format(v))))
        .collect();
    if against.is_empty() {
        used
    } else {
        format!("{used} ({})", against.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_count_says_by_what() {
        let mut r = QWorkerRow {
            namespace: "ns".into(),
            name: "mail".into(),
            queue: Some(5),
            in_flight: None,
            task_seconds: None,
            desired: 3,
            held_by: None,
            current: 3,
            updated: 3,
            draining: 0,
        };
        assert_eq!(desired(&r), "3");
        r.held_by = Some("Paused".into());
        assert_eq!(desired(&r), "3 (Paused)");
    }

    #[test]
    fn task_time_cells() {
        assert_eq!(seconds(None), "-");
        assert_eq!(seconds(Some(1.25)), "1.25s");
        assert_eq!(seconds(Some(0.004)), "0.00s");
        assert_eq!(seconds(Some(42.4)), "42s");
        assert_eq!(seconds(Some(f64::NAN)), "-");
    }

    #[test]
    fn usage_cells() {
        let u = Usage {
            report: Report::Reported,
            now: Some(120),
            peak: Some(250),
            request: Some(500),
            limit: Some(1000),
            recommended: None,
        };
        assert_eq!(usage_cell(&u, format_cpu), "120m/250m (req 500m, lim 1)");
        let rec = Usage {
            recommended: Some(300),
            ..u.clone()
        };
        assert_eq!(
            usage_cell(&rec, format_cpu),
            "120m/250m (req 500m, rec 300m, lim 1)"
        );
        let none = Usage {
            report: Report::NoneYet,
            now: None,
            peak: None,
            request: None,
            limit: None,
            recommended: None,
        };
        assert_eq!(usage_cell(&none, format_cpu), "<none reported>");
        let bad = Usage {
            report: Report::Malformed,
            request: Some(500),
            ..none.clone()
        };
        assert_eq!(
            usage_cell(&bad, format_cpu),
            "<unreadable report> (req 500m)"
        );
        let old_supervisor = Usage {
            report: Report::Reported,
            peak: Some(1024 * 1024),
            ..none
        };
        assert_eq!(usage_cell(&old_supervisor, display_bytes), "-/1Mi");
    }
}
