//! The picture as plain drawing primitives, computed from a [`Recording`] by pure functions (no
//! I/O, no fonts), so that what is drawn where is unit-tested; [`super::svg`] only writes it out.
//!
//! From the top: a title, the Events' labels, a panel of tasks (queue depth, in flight), a panel of
//! workers (desired, current, draining), one row per pod coloured by its state over time, the time
//! axis in seconds, and the legend. Each Event is a vertical line through the panels and the rows.

use std::collections::BTreeMap;
use std::time::Duration;

use super::samples::{Marker, PodState, Recording, Sample};
use crate::duration::format_duration;

/// A picture: its size in pixels and what is on it, back to front.
#[derive(Clone, Debug, PartialEq)]
pub struct Drawing {
    pub width: f64,
    pub height: f64,
    pub items: Vec<Item>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Rect {
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        fill: &'static str,
        class: Option<&'static str>,
        /// The tooltip.
        title: Option<String>,
    },
    Line {
        x1: f64,
        y1: f64,
        x2: f64,
        y2: f64,
        stroke: &'static str,
        width: f64,
        dashed: bool,
    },
    /// An open polyline.
    Path {
        points: Vec<(f64, f64)>,
        stroke: &'static str,
        width: f64,
        dashed: bool,
    },
    /// A closed, filled polygon.
    Area {
        points: Vec<(f64, f64)>,
        fill: &'static str,
        opacity: f64,
    },
    Text {
        x: f64,
        y: f64,
        text: String,
        size: f64,
        anchor: Anchor,
        fill: &'static str,
        bold: bool,
    },
    /// A named part of the picture (`class`, `data-*` attributes), so that tests and readers of the
    /// SVG can find the pod rows, series and Events.
    Group {
        class: &'static str,
        data: Vec<(&'static str, String)>,
        title: Option<String>,
        items: Vec<Item>,
    },
}

/// A stretch of time a pod spent in one state.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub from: f64,
    pub to: f64,
    pub state: PodState,
}

/// One pod's row: its name and its segments in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct PodRow {
    pub name: String,
    pub segments: Vec<Segment>,
}

/// The line series of the two panels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    Queue,
    InFlight,
    Desired,
    Current,
    Draining,
}

impl Series {
    pub const ALL: [Series; 5] = [
        Series::Queue,
        Series::InFlight,
        Series::Desired,
        Series::Current,
        Series::Draining,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Series::Queue => "queue depth",
            Series::InFlight => "in flight",
            Series::Desired => "desired",
            Series::Current => "current",
            Series::Draining => "draining",
        }
    }

    fn value(self, s: &Sample) -> Option<f64> {
        match self {
            Series::Queue => s.queue.map(|v| v as f64),
            Series::InFlight => s.in_flight.map(|v| v as f64),
            Series::Desired => Some(f64::from(s.desired)),
            Series::Current => Some(f64::from(s.current)),
            Series::Draining => Some(f64::from(s.draining)),
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Series::Queue => "#2171b5",
            Series::InFlight => "#6a51a3",
            Series::Desired => "#41ab5d",
            Series::Current => "#252525",
            Series::Draining => "#e6550d",
        }
    }

    fn dashed(self) -> bool {
        self == Series::Desired
    }
}

pub fn state_colour(state: PodState) -> &'static str {
    match state {
        PodState::Pending => "#f2c14e",
        PodState::Running => "#9ecae1",
        PodState::Idle => "#a1d99b",
        PodState::Busy => "#238b45",
        PodState::Draining => "#e6550d",
        PodState::Ended => "#bdbdbd",
    }
}

fn state_class(state: PodState) -> &'static str {
    match state {
        PodState::Pending => "seg pending",
        PodState::Running => "seg running",
        PodState::Idle => "seg idle",
        PodState::Busy => "seg busy",
        PodState::Draining => "seg draining",
        PodState::Ended => "seg ended",
    }
}

/// Each pod's segments. A state seen at one sample lasts until the next sample; a pod missing from
/// the next sample is taken to have gone by then. Rows in order of first appearance, then name.
pub fn pod_rows(samples: &[Sample]) -> Vec<PodRow> {
    let mut rows: BTreeMap<&str, (usize, PodRow)> = BTreeMap::new();
    for (i, sample) in samples.iter().enumerate() {
        let until = samples.get(i + 1).map_or(sample.t, |next| next.t);
        for pod in &sample.pods {
            let order = rows.len();
            let (_, row) = rows.entry(pod.name.as_str()).or_insert_with(|| {
                (
                    order,
                    PodRow {
                        name: pod.name.clone(),
                        segments: Vec::new(),
                    },
                )
            });
            match row.segments.last_mut() {
                Some(last) if last.state == pod.state && last.to == sample.t => last.to = until,
                _ => row.segments.push(Segment {
                    from: sample.t,
                    to: until,
                    state: pod.state,
                }),
            }
        }
    }
    let mut rows: Vec<(usize, PodRow)> = rows.into_values().collect();
    rows.sort_by_key(|(order, _)| *order);
    rows.into_iter().map(|(_, row)| row).collect()
}

/// A series as step lines in data coordinates (a value holds until the next sample), one run per
/// stretch where the value is known.
pub fn steps(samples: &[Sample], series: Series) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut open = false;
    for (i, sample) in samples.iter().enumerate() {
        let Some(v) = series.value(sample) else {
            open = false;
            continue;
        };
        if !open {
            runs.push(Vec::new());
            open = true;
        }
        if let Some(run) = runs.last_mut() {
            if let Some(&(_, prev)) = run.last() {
                if prev != v {
                    run.push((sample.t, v));
                }
            } else {
                run.push((sample.t, v));
            }
            if let Some(next) = samples.get(i + 1) {
                run.push((next.t, v));
            }
        }
    }
    runs
}

/// The short label of an Event: `↑3` / `↓0` for a scale, `drain 2`, `undrain`, else its reason.
pub fn short_label(reason: &str, note: &str) -> String {
    let number_after = |word: &str| {
        note.split(word)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|n| n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty())
            .map(str::to_owned)
    };
    match reason {
        "ScaledUp" => number_after(" to ").map_or_else(|| "scaled up".into(), |n| format!("↑{n}")),
        "ScaledDown" => {
            number_after(" to ").map_or_else(|| "scaled down".into(), |n| format!("↓{n}"))
        }
        "Draining" => {
            number_after("draining ").map_or_else(|| "drain".into(), |n| format!("drain {n}"))
        }
        "Undrained" => "undrain".into(),
        other => other.to_owned(),
    }
}

/// The label of an Event. A repeated scale Event's note is its first occurrence's (see
/// [`Marker::occurrence`]), so its count comes from the status instead: the first desired count
/// after the Event that differs from the one before it.
pub fn event_label(event: &Marker, samples: &[Sample]) -> String {
    if event.occurrence <= 1 {
        return short_label(&event.reason, &event.note);
    }
    let before = samples
        .iter()
        .take_while(|s| s.t < event.t)
        .last()
        .map(|s| s.desired);
    let after = samples
        .iter()
        .skip_while(|s| s.t < event.t)
        .map(|s| s.desired)
        .find(|d| Some(*d) != before);
    match (event.reason.as_str(), after) {
        ("ScaledUp", Some(n)) => format!("↑{n}"),
        ("ScaledDown", Some(n)) => format!("↓{n}"),
        ("ScaledUp", None) => "scaled up".into(),
        ("ScaledDown", None) => "scaled down".into(),
        ("Draining", _) => "drain".into(),
        _ => short_label(&event.reason, &event.note),
    }
}

/// Puts labels that start at `x` and are `width` wide on lanes so that none overlaps the one
/// before it on its lane; the lane of each label, in input order. Beyond `max_lanes`, the lane
/// that frees first is shared.
pub fn lanes(labels: &[(f64, f64)], max_lanes: usize) -> Vec<usize> {
    let mut ends: Vec<f64> = Vec::new();
    labels
        .iter()
        .map(|&(x, width)| {
            let lane = match ends.iter().position(|&end| end <= x) {
                Some(free) => free,
                None if ends.len() < max_lanes.max(1) => {
                    ends.push(f64::NEG_INFINITY);
                    ends.len() - 1
                }
                None => ends
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i),
            };
            ends[lane] = x + width;
            lane
        })
        .collect()
}

/// Tick spacing on the time axis: the first of the usual steps that gives at most 12 ticks.
pub fn time_step(span: f64) -> f64 {
    const STEPS: [f64; 14] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    ];
    STEPS
        .into_iter()
        .find(|step| span / step <= 12.0)
        .unwrap_or_else(|| (span / 12.0 / 3600.0).ceil() * 3600.0)
}

/// The top of a value axis from 0 to at least `max`, and its tick step (1, 2 or 5 × 10ⁿ, at most
/// five ticks above 0).
pub fn value_axis(max: f64) -> (f64, f64) {
    let max = max.max(1.0);
    let mut magnitude = 1.0;
    loop {
        for base in [1.0, 2.0, 5.0] {
            let step = base * magnitude;
            if (max / step).ceil() <= 5.0 {
                return ((max / step).ceil() * step, step);
            }
        }
        magnitude *= 10.0;
    }
}

/// `0s`, `10s`, `1m30s`.
fn tick_label(t: f64) -> String {
    if t <= 0.0 {
        "0s".into()
    } else {
        format_duration(Duration::from_secs_f64(t))
    }
}

const WIDTH: f64 = 1200.0;
const RIGHT: f64 = 24.0;
const LANE_H: f64 = 14.0;
const TASKS_H: f64 = 120.0;
const WORKERS_H: f64 = 90.0;
const PANEL_GAP: f64 = 22.0;
const ROW_H: f64 = 14.0;
const ROW_GAP: f64 = 4.0;
/// Width of one character of 11 px text, roughly (for label widths; no fonts here).
const CHAR_W: f64 = 6.6;
const GRID: &str = "#e5e5e5";
const INK: &str = "#252525";
const MUTED: &str = "#636363";

/// Lays out the whole picture.
pub fn layout(rec: &Recording) -> Drawing {
    let rows = pod_rows(&rec.samples);
    let end = rec
        .samples
        .iter()
        .map(|s| s.t)
        .chain(rec.events.iter().map(|e| e.t))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let longest = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0);
    let left = (longest as f64 * CHAR_W + 24.0).clamp(150.0, 360.0);
    let plot_w = WIDTH - left - RIGHT;
    let x = |t: f64| left + t / end * plot_w;
    let mut items = Vec::new();

    // Title.
    items.push(text(
        16.0,
        24.0,
        format!("QWorker {}/{}", rec.namespace, rec.qworker),
        16.0,
        Anchor::Start,
        INK,
        true,
    ));
    items.push(text(
        16.0,
        42.0,
        format!(
            "recorded from {} for {}, {} samples, {} pods, {} events",
            rec.started.replacen('T', " ", 1).replace('Z', " UTC"),
            tick_label(end),
            rec.samples.len(),
            rows.len(),
            rec.events.len()
        ),
        11.0,
        Anchor::Start,
        MUTED,
        false,
    ));

    // Event labels on lanes above the panels.
    let mut events: Vec<&Marker> = rec.events.iter().collect();
    events.sort_by(|a, b| a.t.total_cmp(&b.t));
    let labels: Vec<String> = events
        .iter()
        .map(|e| event_label(e, &rec.samples))
        .collect();
    // A label starts right of its line, or ends left of it where it would leave the picture.
    let spans: Vec<(f64, f64, bool)> = events
        .iter()
        .zip(&labels)
        .map(|(e, l)| {
            let width = l.chars().count() as f64 * CHAR_W + 8.0;
            let left_of_line = x(e.t) + width > WIDTH - 4.0;
            let start = if left_of_line { x(e.t) - width } else { x(e.t) };
            (start, width, left_of_line)
        })
        .collect();
    let event_lanes = lanes(
        &spans.iter().map(|&(s, w, _)| (s, w)).collect::<Vec<_>>(),
        4,
    );
    let lane_count = event_lanes.iter().max().map_or(0, |l| l + 1);
    let lanes_top = 56.0;
    let tasks_top = lanes_top + lane_count.max(1) as f64 * LANE_H + 10.0;
    let workers_top = tasks_top + TASKS_H + PANEL_GAP;
    let rows_top = workers_top + WORKERS_H + PANEL_GAP + 6.0;
    // With no pod, one row's room for saying so.
    let rows_bottom = rows_top + rows.len().max(1) as f64 * (ROW_H + ROW_GAP);
    let axis_y = rows_bottom + 4.0;

    // Grid and time axis.
    let step = time_step(end);
    let mut tick = 0.0;
    while tick <= end + 1e-9 {
        let tx = x(tick);
        items.push(line(tx, tasks_top, tx, axis_y, GRID, 1.0, false));
        items.push(line(tx, axis_y, tx, axis_y + 4.0, MUTED, 1.0, false));
        items.push(text(
            tx,
            axis_y + 16.0,
            tick_label(tick),
            10.0,
            Anchor::Middle,
            MUTED,
            false,
        ));
        tick += step;
    }
    items.push(line(left, axis_y, left + plot_w, axis_y, MUTED, 1.0, false));
    items.push(text(
        left + plot_w / 2.0,
        axis_y + 32.0,
        "seconds since the first sample".into(),
        11.0,
        Anchor::Middle,
        MUTED,
        false,
    ));

    // The two panels.
    for (title, top, height, series) in [
        (
            "tasks",
            tasks_top,
            TASKS_H,
            &[Series::Queue, Series::InFlight][..],
        ),
        (
            "workers",
            workers_top,
            WORKERS_H,
            &[Series::Draining, Series::Current, Series::Desired][..],
        ),
    ] {
        let max = rec
            .samples
            .iter()
            .flat_map(|s| series.iter().filter_map(|k| k.value(s)))
            .fold(0.0, f64::max);
        let (top_value, value_step) = value_axis(max);
        let y = |v: f64| top + height - v / top_value * height;
        items.push(text(
            16.0,
            top + 12.0,
            title.into(),
            12.0,
            Anchor::Start,
            INK,
            true,
        ));
        let mut v = 0.0;
        while v <= top_value + 1e-9 {
            items.push(line(left, y(v), left + plot_w, y(v), GRID, 1.0, false));
            items.push(text(
                left - 6.0,
                y(v) + 3.5,
                format!("{v}"),
                10.0,
                Anchor::End,
                MUTED,
                false,
            ));
            v += value_step;
        }
        items.push(line(left, top, left, top + height, MUTED, 1.0, false));
        items.push(line(
            left,
            top + height,
            left + plot_w,
            top + height,
            MUTED,
            1.0,
            false,
        ));
        for &kind in series {
            let mut paths = Vec::new();
            for run in steps(&rec.samples, kind) {
                let points: Vec<(f64, f64)> = run.into_iter().map(|(t, v)| (x(t), y(v))).collect();
                // The queue as a shaded area, so that the in-flight line on it stays visible.
                if kind == Series::Queue {
                    if let (Some(&(first, _)), Some(&(last, _))) = (points.first(), points.last()) {
                        let mut area = points.clone();
                        area.push((last, y(0.0)));
                        area.push((first, y(0.0)));
                        paths.push(Item::Area {
                            points: area,
                            fill: kind.colour(),
                            opacity: 0.15,
                        });
                    }
                }
                paths.push(Item::Path {
                    points,
                    stroke: kind.colour(),
                    width: 2.0,
                    dashed: kind.dashed(),
                });
            }
            items.push(Item::Group {
                class: "series",
                data: vec![("series", kind.as_str().to_owned())],
                title: Some(kind.as_str().to_owned()),
                items: paths,
            });
        }
    }

    // One row per pod.
    items.push(text(
        16.0,
        rows_top - 8.0,
        "pods".into(),
        12.0,
        Anchor::Start,
        INK,
        true,
    ));
    if rows.is_empty() {
        items.push(text(
            left + 4.0,
            rows_top + ROW_H - 3.0,
            "no worker pods in this recording".into(),
            11.0,
            Anchor::Start,
            MUTED,
            false,
        ));
    }
    for (i, row) in rows.iter().enumerate() {
        let top = rows_top + i as f64 * (ROW_H + ROW_GAP);
        let mut parts = vec![text(
            left - 6.0,
            top + ROW_H - 3.0,
            row.name.clone(),
            11.0,
            Anchor::End,
            INK,
            false,
        )];
        for seg in &row.segments {
            parts.push(Item::Rect {
                x: x(seg.from),
                y: top,
                w: (x(seg.to) - x(seg.from)).max(1.0),
                h: ROW_H,
                fill: state_colour(seg.state),
                class: Some(state_class(seg.state)),
                title: Some(format!(
                    "{}: {} from {:.1} s to {:.1} s",
                    row.name,
                    seg.state.as_str(),
                    seg.from,
                    seg.to
                )),
            });
        }
        items.push(Item::Group {
            class: "pod-row",
            data: vec![("pod", row.name.clone())],
            title: None,
            items: parts,
        });
    }

    // Events: a line through everything, the label on its lane.
    for (((event, label), lane), &(_, _, left_of_line)) in
        events.iter().zip(labels).zip(&event_lanes).zip(&spans)
    {
        let ex = x(event.t);
        let (label_x, anchor) = if left_of_line {
            (ex - 3.0, Anchor::End)
        } else {
            (ex + 3.0, Anchor::Start)
        };
        let repeat = if event.occurrence > 1 {
            format!(
                " (occurrence {}; a repeated Event keeps its first note)",
                event.occurrence
            )
        } else {
            String::new()
        };
        let colour = if event.warning { "#cb181d" } else { "#525252" };
        let label_y = lanes_top + *lane as f64 * LANE_H + 10.0;
        items.push(Item::Group {
            class: "event",
            data: vec![
                ("reason", event.reason.clone()),
                ("t", format!("{:.3}", event.t)),
            ],
            title: Some(format!(
                "{:.1} s {}: {}{repeat}",
                event.t, event.reason, event.note
            )),
            items: vec![
                line(ex, label_y - 9.0, ex, rows_bottom, colour, 1.0, true),
                text(label_x, label_y, label, 11.0, anchor, colour, true),
            ],
        });
    }

    // Legend: pod states, then the series and the Event line.
    let legend_top = axis_y + 48.0;
    let mut lx = 16.0;
    items.push(text(
        lx,
        legend_top + 10.0,
        "pod:".into(),
        11.0,
        Anchor::Start,
        INK,
        true,
    ));
    lx += 34.0;
    for state in PodState::ALL {
        items.push(Item::Rect {
            x: lx,
            y: legend_top,
            w: 22.0,
            h: 12.0,
            fill: state_colour(state),
            class: Some("legend"),
            title: None,
        });
        items.push(text(
            lx + 27.0,
            legend_top + 10.0,
            state.as_str().into(),
            11.0,
            Anchor::Start,
            INK,
            false,
        ));
        lx += 27.0 + state.as_str().len() as f64 * CHAR_W + 18.0;
    }
    let legend_top = legend_top + 22.0;
    let mut lx = 16.0;
    items.push(text(
        lx,
        legend_top + 10.0,
        "lines:".into(),
        11.0,
        Anchor::Start,
        INK,
        true,
    ));
    lx += 44.0;
    for kind in Series::ALL {
        items.push(line(
            lx,
            legend_top + 6.0,
            lx + 22.0,
            legend_top + 6.0,
            kind.colour(),
            2.0,
            kind.dashed(),
        ));
        items.push(text(
            lx + 27.0,
            legend_top + 10.0,
            kind.as_str().into(),
            11.0,
            Anchor::Start,
            INK,
            false,
        ));
        lx += 27.0 + kind.as_str().len() as f64 * CHAR_W + 18.0;
    }
    items.push(line(
        lx,
        legend_top - 2.0,
        lx,
        legend_top + 14.0,
        "#525252",
        1.0,
        true,
    ));
    items.push(text(
        lx + 5.0,
        legend_top + 10.0,
        "an Event on the QWorker (↑N / ↓N: scaled to N workers)".into(),
        11.0,
        Anchor::Start,
        INK,
        false,
    ));

    Drawing {
        width: WIDTH,
        height: legend_top + 30.0,
        items,
    }
}

fn text(
    x: f64,
    y: f64,
    text: String,
    size: f64,
    anchor: Anchor,
    fill: &'static str,
    bold: bool,
) -> Item {
    Item::Text {
        x,
        y,
        text,
        size,
        anchor,
        fill,
        bold,
    }
}

fn line(
    x1: f64,
    y1: f64,
    x2: f64,
    y2: f64,
    stroke: &'static str,
    width: f64,
    dashed: bool,
) -> Item {
    Item::Line {
        x1,
        y1,
        x2,
        y2,
        stroke,
        width,
        dashed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::samples::PodSample;

    fn sample(t: f64, pods: &[(&str, PodState)]) -> Sample {
        Sample {
            t,
            pods: pods
                .iter()
                .map(|(name, state)| PodSample {
                    name: (*name).into(),
                    state: *state,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn seg(from: f64, to: f64, state: PodState) -> Segment {
        Segment { from, to, state }
    }

    #[test]
    fn a_pod_pending_then_busy_then_draining_gives_three_segments() {
        use PodState::*;
        let mut samples: Vec<Sample> = (0..12)
            .map(|t| {
                let state = match t {
                    0..=2 => Pending,
                    3..=9 => Busy,
                    _ => Draining,
                };
                sample(f64::from(t), &[("a", state)])
            })
            .collect();
        samples.push(sample(12.0, &[]));
        assert_eq!(
            pod_rows(&samples),
            vec![PodRow {
                name: "a".into(),
                segments: vec![
                    seg(0.0, 3.0, Pending),
                    seg(3.0, 10.0, Busy),
                    seg(10.0, 12.0, Draining)
                ]
            }]
        );
    }

    #[test]
    fn rows_come_in_order_of_appearance_and_a_gap_splits_a_segment() {
        use PodState::*;
        let samples = [
            sample(0.0, &[("z", Idle)]),
            sample(1.0, &[("z", Idle), ("a", Pending)]),
            sample(2.0, &[("a", Idle)]),
            sample(3.0, &[("z", Idle), ("a", Idle)]),
        ];
        let rows = pod_rows(&samples);
        assert_eq!(
            rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            vec!["z", "a"]
        );
        assert_eq!(
            rows[0].segments,
            vec![seg(0.0, 2.0, Idle), seg(3.0, 3.0, Idle)]
        );
        assert_eq!(
            rows[1].segments,
            vec![seg(1.0, 2.0, Pending), seg(2.0, 3.0, Idle)]
        );
    }

    #[test]
    fn series_are_steps_broken_where_unknown() {
        let mut samples: Vec<Sample> = [None, Some(4), Some(4), Some(1), None, Some(0)]
            .into_iter()
            .enumerate()
            .map(|(t, q)| Sample {
                t: t as f64,
                queue: q,
                desired: t as i32,
                ..Default::default()
            })
            .collect();
        assert_eq!(
            steps(&samples, Series::Queue),
            vec![
                vec![(1.0, 4.0), (2.0, 4.0), (3.0, 4.0), (3.0, 1.0), (4.0, 1.0)],
                vec![(5.0, 0.0)]
            ]
        );
        samples.truncate(3);
        assert_eq!(
            steps(&samples, Series::Desired),
            vec![vec![
                (0.0, 0.0),
                (1.0, 0.0),
                (1.0, 1.0),
                (2.0, 1.0),
                (2.0, 2.0)
            ]]
        );
    }

    #[test]
    fn event_labels() {
        assert_eq!(
            short_label("ScaledUp", "scaled up from 0 to 2 workers (backlog 8)"),
            "↑2"
        );
        assert_eq!(
            short_label("ScaledDown", "scaled down from 2 to 0 workers"),
            "↓0"
        );
        assert_eq!(
            short_label("Draining", "draining 2 worker(s) (scale-down): a, b"),
            "drain 2"
        );
        assert_eq!(
            short_label("Undrained", "demand rose again; kept a"),
            "undrain"
        );
        assert_eq!(short_label("ScaledUp", "odd"), "scaled up");
        assert_eq!(short_label("CrashLoop", "3 workers failed"), "CrashLoop");
    }

    #[test]
    fn a_repeated_scale_event_takes_its_count_from_the_status() {
        let samples: Vec<Sample> = [(0.0, 2), (1.0, 2), (2.0, 1), (3.0, 1), (4.0, 0)]
            .into_iter()
            .map(|(t, desired)| Sample {
                t,
                desired,
                ..Default::default()
            })
            .collect();
        let stale = |t: f64, occurrence: i32, reason: &str| Marker {
            t,
            reason: reason.into(),
            note: "scaled down from 2 to 1 workers".into(),
            warning: false,
            occurrence,
        };
        assert_eq!(event_label(&stale(1.5, 1, "ScaledDown"), &samples), "↓1");
        // The repeat at 3.5 s scaled to 0, whatever its note says; the status is read after it
        // (the operator publishes the Event before it writes the status).
        assert_eq!(event_label(&stale(3.5, 2, "ScaledDown"), &samples), "↓0");
        assert_eq!(event_label(&stale(3.0, 2, "ScaledDown"), &samples), "↓0");
        assert_eq!(
            event_label(&stale(4.5, 2, "ScaledDown"), &samples),
            "scaled down"
        );
        assert_eq!(event_label(&stale(3.5, 2, "Draining"), &samples), "drain");
    }

    #[test]
    fn labels_that_would_overlap_go_to_the_next_lane() {
        assert_eq!(
            lanes(&[(0.0, 30.0), (10.0, 30.0), (35.0, 10.0), (50.0, 5.0)], 4),
            vec![0, 1, 0, 0]
        );
        // Out of lanes: the one that frees first is shared.
        assert_eq!(
            lanes(&[(0.0, 50.0), (1.0, 20.0), (2.0, 5.0)], 2),
            vec![0, 1, 1]
        );
    }

    #[test]
    fn axes_have_round_ticks() {
        assert_eq!(time_step(10.0), 1.0);
        assert_eq!(time_step(45.0), 5.0);
        assert_eq!(time_step(120.0), 10.0);
        assert_eq!(time_step(600.0), 60.0);
        assert_eq!(value_axis(0.0), (1.0, 1.0));
        assert_eq!(value_axis(4.0), (4.0, 1.0));
        assert_eq!(value_axis(7.0), (8.0, 2.0));
        assert_eq!(value_axis(30.0), (30.0, 10.0));
        assert_eq!(value_axis(230.0), (250.0, 50.0));
        assert_eq!(tick_label(0.0), "0s");
        assert_eq!(tick_label(90.0), "1m30s");
    }

    fn groups<'a>(d: &'a Drawing, class: &str) -> Vec<&'a Item> {
        d.items
            .iter()
            .filter(|i| matches!(i, Item::Group { class: c, .. } if *c == class))
            .collect()
    }

    fn recording() -> Recording {
        use PodState::*;
        Recording {
            namespace: "ns".into(),
            qworker: "mail".into(),
            started: "2026-12-01T10:00:00Z".into(),
            samples: vec![
                sample(0.0, &[]),
                sample(10.0, &[("mail-a", Pending)]),
                sample(20.0, &[("mail-a", Busy), ("mail-b", Idle)]),
                sample(40.0, &[("mail-b", Draining)]),
            ],
            events: vec![
                Marker {
                    t: 30.0,
                    reason: "ScaledDown".into(),
                    note: "scaled down from 2 to 1 workers".into(),
                    warning: false,
                    occurrence: 1,
                },
                Marker {
                    t: 10.0,
                    reason: "ScaledUp".into(),
                    note: "scaled up from 0 to 2 workers".into(),
                    warning: false,
                    occurrence: 1,
                },
            ],
        }
    }

    #[test]
    fn events_are_lines_at_their_time_and_pods_are_rows() {
        let d = layout(&recording());
        let rows = groups(&d, "pod-row");
        assert_eq!(rows.len(), 2);
        let events = groups(&d, "event");
        let xs: Vec<(String, f64)> = events
            .iter()
            .map(|g| match g {
                Item::Group { data, items, .. } => {
                    let x = match &items[0] {
                        Item::Line { x1, x2, .. } => {
                            assert_eq!(x1, x2, "an Event line is vertical");
                            *x1
                        }
                        other => panic!("{other:?}"),
                    };
                    (data[0].1.clone(), x)
                }
                _ => unreachable!(),
            })
            .collect();
        // 40 s span over the plot width: 10 s is a quarter in, 30 s three quarters.
        let left = 150.0;
        let plot = WIDTH - left - RIGHT;
        assert_eq!(
            xs,
            vec![
                ("ScaledUp".to_owned(), left + plot / 4.0),
                ("ScaledDown".to_owned(), left + plot * 3.0 / 4.0)
            ]
        );
        // mail-a: pending from 10 s to 20 s, starting at the same x as the scale-up.
        let Item::Group { items, .. } = rows[0] else {
            unreachable!()
        };
        let first = items
            .iter()
            .find_map(|i| match i {
                Item::Rect { x, w, class, .. } => Some((*x, *w, *class)),
                _ => None,
            })
            .expect("a segment");
        assert_eq!(first, (left + plot / 4.0, plot / 4.0, Some("seg pending")));
        assert_eq!(groups(&d, "series").len(), Series::ALL.len());
    }

    #[test]
    fn an_empty_recording_still_draws() {
        let d = layout(&Recording::default());
        assert!(groups(&d, "pod-row").is_empty());
        assert!(d.height > 200.0);
        assert!(d
            .items
            .iter()
            .any(|i| matches!(i, Item::Text { text, .. } if text.contains("no worker pods"))));
    }
}
