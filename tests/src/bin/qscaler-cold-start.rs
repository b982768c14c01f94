//! Cold start, measured whole (issue 17 item 3): from LPUSH of N tasks into the empty queue of a
//! task-mode QWorker with no workers, to the first task started and the last one done, split into its
//! stages, for the same operator at several poll intervals. `bench/cold-start.sh` builds and runs it.
//!
//! Every instant is this process's own monotonic clock, stamped when it first sees a thing: API
//! timestamps have 1 s resolution, far too coarse for stages of a few ms. Pods are watched
//! (`kube::runtime::watcher`): created (first seen), scheduled (`spec.nodeName`), container running
//! (`state.running`). Worker ready and task taken are qsupervisor's own log lines, by their timestamps
//! (µs, this machine's clock): it has read its pod from the API, and `task "…": starting` right after
//! its BLMOVE returned. The first thing it writes to the API after reading its pod, the
//! `quickube.com/activity` annotation, reaches a watch only after the task is taken (a PATCH and a
//! watch event later), so it cannot split the stage; and a poll of the processing list (every 5 ms,
//! kept as the fallback when the log has no such line) lags by however late this process gets the
//! CPU on a busy machine. Task started and done are the `start` / `end` events qscaler-test-worker
//! `--stdin-task` pushes to `<queue>:events`, popped as they come.
//!
//! Stages follow the pod that started the first task, so they add up to push → first start.
//!
//! - [`stats`]: median and p90 (nearest rank).
//! - [`supervisor_log`]: when qsupervisor read its pod and took a task, from its log.
//! - [`timeline`]: one trial's stamps → its stage times (pure).
//! - [`report`]: the markdown table and the raw per-trial lines.
//! - [`observe`]: the pod watcher, the event popper and the processing-list poller.
//! - [`target`]: the cluster (stand-in or real node), its namespace, the QWorker, the operator.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Cold start of a task-mode QWorker from zero workers, split into its stages, per operator poll interval"
)]
struct Args {
    /// The qscaler-operator binary to run (one process per poll interval, watching the bench's namespace).
    #[arg(long)]
    operator: PathBuf,
    /// Poll intervals to compare, each a setting of its own.
    #[arg(long, value_delimiter = ',', default_value = "500ms,5s,30s")]
    intervals: Vec<String>,
    /// Whether a push may wake the operator: `off` runs with Redis' keyspace notifications off
    /// (every push waits for a poll), `on` sets `notify-keyspace-events Kl` for the run (the
    /// operator's push trigger). Each is a setting of its own; the value Redis had is restored.
    #[arg(long, value_delimiter = ',', default_value = "off")]
    push: Vec<Push>,
    /// Trials per setting.
    #[arg(long, default_value_t = 5)]
    trials: usize,
    /// Tasks pushed at once per trial.
    #[arg(long, default_value_t = 10)]
    tasks: usize,
    /// How long each task runs.
    #[arg(long, default_value_t = 200)]
    task_ms: u64,
    /// The QWorker's maxReplicas (scalingFactor 1: one worker per waiting task, up to this).
    #[arg(long, default_value_t = 5)]
    max_replicas: u32,
    /// Attach to the real node of tests/node.sh (kubelet + Docker) and run the project's images.
    #[arg(long)]
    real_node: bool,
    /// Give up on a trial after this long (the slowest poll interval is added).
    #[arg(long, default_value = "120s")]
    trial_timeout: String,
    /// Also write one tab-separated line per trial here (stage times in ms).
    #[arg(long)]
    raw: Option<PathBuf>,
}

/// Redis' keyspace notifications during a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Push {
    Off,
    On,
}

impl Push {
    /// The `notify-keyspace-events` value of the setting.
    fn keyspace_events(self) -> &'static str {
        match self {
            Push::Off => "",
            Push::On => "Kl",
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let intervals = args
        .intervals
        .iter()
        .map(|s| {
            qscaler_crds::duration::parse(s)
                .map(|d| (s.clone(), d))
                .map_err(|e| anyhow::anyhow!("bad interval {s:?}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    if intervals.is_empty() || args.push.is_empty() || args.trials == 0 || args.tasks == 0 {
        bail!("need at least one interval, one push setting, one trial and one task");
    }
    let slowest = intervals.iter().map(|(_, d)| *d).max().unwrap_or_default();
    let trial_timeout = qscaler_crds::duration::parse(&args.trial_timeout)
        .map_err(|e| anyhow::anyhow!("bad --trial-timeout: {e}"))?
        + slowest;
    if !args.operator.exists() {
        bail!(
            "{} missing: cargo build --release -p qscaler-operator",
            args.operator.display()
        );
    }

    let bench = target::Bench::set_up(args.real_node).await?;
    let result = run_all(&args, &bench, &intervals, trial_timeout).await;
    let keyspace_events = bench.keyspace_events.clone();
    bench.tear_down().await;
    let rows = result?;

    println!(
        "{}",
        report::table(&rows, args.tasks, args.task_ms, args.max_replicas)
    );
    // Whether the operator could be woken by a push instead of waiting for its next poll.
    println!(
        "\nRedis notify-keyspace-events before the run (restored after it): {keyspace_events:?}; \
         settings marked \"+ push\" ran with \"Kl\", the others with \"\""
    );
    if let Some(path) = &args.raw {
        std::fs::write(path, report::raw(&rows))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Every setting in turn; each runs its own operator for its trials.
async fn run_all(
    args: &Args,
    bench: &target::Bench,
    intervals: &[(String, Duration)],
    trial_timeout: Duration,
) -> Result<Vec<report::Row>> {
    let mut rows = Vec::new();
    let mut rng = Rng::seeded();
    let settings = args
        .push
        .iter()
        .flat_map(|push| intervals.iter().map(move |i| (*push, i)));
    for (push, (interval_label, interval)) in settings {
        let label = match push {
            Push::Off => interval_label.clone(),
            Push::On => format!("{interval_label} + push"),
        };
        let label = &label;
        // Set before the operator starts: it reads the setting when it subscribes.
        bench.set_keyspace_events(push.keyspace_events()).await?;
        let operator =
            bench.start_operator(&args.operator, interval_label, &label.replace(' ', ""))?;
        let mut trials = Vec::new();
        for n in 1..=args.trials {
            let name = format!("cs-{}-{n}", label.replace(" + push", "-p").to_lowercase());
            let phase = interval.mul_f64(rng.unit());
            let shape = target::Workload {
                tasks: args.tasks,
                task_ms: args.task_ms,
                max_replicas: args.max_replicas,
            };
            let t = bench
                .trial(&name, &shape, phase, trial_timeout)
                .await
                .with_context(|| {
                    format!("trial {name} (operator log: {})", operator.log.display())
                })?;
            eprintln!(
                "[cold-start] {label} trial {n}/{}: first start {}, last done {} ({} pods)",
                args.trials,
                report::ms(t.first_start),
                report::ms(t.last_done),
                t.pods
            );
            trials.push(t);
        }
        bench.stop_operator(operator).await;
        rows.push(report::Row {
            setting: label.clone(),
            trials,
        });
    }
    Ok(rows)
}

/// A small xorshift generator: the push lands at a uniformly random phase of the poll cycle.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Rng(nanos | 1)
    }

    /// In [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

mod stats {
    //! Summaries of a few trials: median and p90 by nearest rank (with 5 trials, p90 is the max).

    /// (median, p90) of the values; None when there are none.
    pub fn median_p90(values: &[f64]) -> Option<(f64, f64)> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        // Nearest rank: the smallest value with at least 90 % of the values at or below it.
        let rank = ((0.9 * n as f64).ceil() as usize).clamp(1, n);
        Some((median, v[rank - 1]))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn odd_even_and_empty() {
            assert_eq!(median_p90(&[3.0, 1.0, 2.0]), Some((2.0, 3.0)));
            assert_eq!(median_p90(&[4.0, 1.0, 3.0, 2.0]), Some((2.5, 4.0)));
            assert_eq!(median_p90(&[]), None);
        }

        #[test]
        fn p90_is_the_ninth_of_ten() {
            let v: Vec<f64> = (1..=10).map(f64::from).collect();
            assert_eq!(median_p90(&v), Some((5.5, 9.0)));
        }
    }
}

mod supervisor_log {
    //! When qsupervisor had read its pod from the API (the first log line it writes right after: the
    //! pod watch starting, or the task loop released) and when it took its first task (`task "…":
    //! starting`, logged as its BLMOVE returns), by the timestamp that starts the line.

    use k8s_openapi::jiff::Timestamp;
    use qscaler_tests::operator::strip_ansi;

    /// Lines qsupervisor logs once its pod has been read.
    fn after_pod_read(line: &str) -> bool {
        (line.contains("watching pod ") && line.contains("for the drain annotation"))
            || (line.contains("task mode: ") && line.contains("processing list"))
    }

    /// Lines qsupervisor logs as it has taken a task.
    fn task_taken(line: &str) -> bool {
        line.contains(" task ") && line.trim_end().ends_with(": starting")
    }

    /// The earliest timestamp of a line that says the pod was read.
    pub fn pod_read_at(log: &str) -> Option<Timestamp> {
        earliest(log, after_pod_read)
    }

    /// The earliest timestamp of a line that says a task was taken.
    pub fn first_take_at(log: &str) -> Option<Timestamp> {
        earliest(log, task_taken)
    }

    fn earliest(log: &str, matches: fn(&str) -> bool) -> Option<Timestamp> {
        log.lines()
            .map(strip_ansi)
            .filter(|l| matches(l))
            .filter_map(|l| {
                let ts = l.split_whitespace().next()?;
                ts.parse::<Timestamp>().ok()
            })
            .min()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_first_line_after_the_pod_read() {
            let log = "2026-12-01T18:31:46.839065Z  INFO task mode: no task is taken before our pod has been read from the Kubernetes API\n\
                       2026-12-01T18:31:46.932528Z  INFO watching pod ns/p for the drain annotation\n\
                       2026-12-01T18:31:46.932993Z  INFO task mode: redis://h:1/0 queue \"q\", processing list \"q:processing:ns/p\", max retries 3\n\
                       test-worker: task \"200\" done\n";
            let t = pod_read_at(log).unwrap();
            assert_eq!(t.to_string(), "2026-12-01T18:31:46.932528Z");
            assert_eq!(first_take_at(log), None);
            let more = format!(
                "{log}2026-12-01T18:31:46.987080Z  INFO task \"200\": starting\n\
                                2026-12-01T18:31:47.598323Z  INFO task \"200\": starting\n"
            );
            let t = first_take_at(&more).unwrap();
            assert_eq!(t.to_string(), "2026-12-01T18:31:46.98708Z");
        }

        #[test]
        fn colours_are_ignored_and_no_line_is_none() {
            let log = "\u{1b}[2m2026-12-01T18:31:47.000001Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m task mode: x, processing list \"y\"\n";
            assert!(pod_read_at(log).is_some());
            assert_eq!(
                pod_read_at("2026-12-01T18:31:46Z  INFO usage usage={}\n"),
                None
            );
        }
    }
}

mod timeline {
    //! One trial's stamps, and the stage times they give.

    use std::collections::HashMap;
    use std::time::Instant;

    /// What was first seen of one worker pod, and when.
    #[derive(Clone, Debug)]
    pub struct PodMarks {
        pub qworker: String,
        pub created: Instant,
        pub scheduled: Option<Instant>,
        pub running: Option<Instant>,
        pub ready: Option<Instant>,
        pub taken: Option<Instant>,
    }

    /// A `start` or `end` event of a task, when it was popped.
    #[derive(Clone, Debug)]
    pub struct TaskEvent {
        pub at: Instant,
        pub start: bool,
        pub pod: String,
    }

    /// The stages of one trial, each in seconds (signed: marks from different sources, a watch that
    /// lags the API a little and a log stamped at the source, need not be in order). None: never seen.
    #[derive(Clone, Debug, Default, PartialEq)]
    pub struct Trial {
        /// push → first pod created: the operator's reaction.
        pub reaction: Option<f64>,
        pub scheduled: Option<f64>,
        pub running: Option<f64>,
        pub ready: Option<f64>,
        pub taken: Option<f64>,
        pub started: Option<f64>,
        /// push → first task started.
        pub first_start: Option<f64>,
        /// push → last task done.
        pub last_done: Option<f64>,
        /// Worker pods the trial's QWorker had.
        pub pods: usize,
    }

    /// b − a in seconds, negative when b came first.
    pub fn signed_secs(a: Instant, b: Instant) -> f64 {
        if b >= a {
            (b - a).as_secs_f64()
        } else {
            -(a - b).as_secs_f64()
        }
    }

    fn since(a: Option<Instant>, b: Option<Instant>) -> Option<f64> {
        Some(signed_secs(a?, b?))
    }

    /// The trial's stages along the pod that started the first task: push → that pod created →
    /// scheduled → running → ready → its task taken → started; and push → last task done.
    pub fn trial(pushed: Instant, pods: &HashMap<String, PodMarks>, events: &[TaskEvent]) -> Trial {
        let first = events.iter().filter(|e| e.start).min_by_key(|e| e.at);
        let last_end = events.iter().filter(|e| !e.start).map(|e| e.at).max();
        let p = first.and_then(|e| pods.get(&e.pod));
        let created = p.map(|p| p.created);
        let scheduled = p.and_then(|p| p.scheduled);
        let running = p.and_then(|p| p.running);
        let ready = p.and_then(|p| p.ready);
        let taken = p.and_then(|p| p.taken);
        let started = first.map(|e| e.at);
        Trial {
            reaction: since(Some(pushed), created),
            scheduled: since(created, scheduled),
            running: since(scheduled, running),
            ready: since(running, ready),
            taken: since(ready, taken),
            started: since(taken, started),
            first_start: since(Some(pushed), started),
            last_done: since(Some(pushed), last_end),
            pods: pods.len(),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::time::Duration;

        fn at(t0: Instant, ms: u64) -> Instant {
            t0 + Duration::from_millis(ms)
        }

        fn marks(t0: Instant, c: u64, s: u64, r: u64, ready: u64, taken: u64) -> PodMarks {
            PodMarks {
                qworker: "w".into(),
                created: at(t0, c),
                scheduled: Some(at(t0, s)),
                running: Some(at(t0, r)),
                ready: Some(at(t0, ready)),
                taken: Some(at(t0, taken)),
            }
        }

        fn ev(t0: Instant, ms: u64, start: bool, pod: &str) -> TaskEvent {
            TaskEvent {
                at: at(t0, ms),
                start,
                pod: pod.into(),
            }
        }

        #[test]
        fn stages_follow_the_pod_that_started_first_and_add_up() {
            let t0 = Instant::now();
            let pods = HashMap::from([
                ("a".to_string(), marks(t0, 100, 110, 300, 350, 360)),
                ("b".to_string(), marks(t0, 100, 105, 250, 270, 280)),
            ]);
            let events = [
                ev(t0, 400, true, "a"),
                ev(t0, 290, true, "b"),
                ev(t0, 490, false, "b"),
                ev(t0, 600, false, "a"),
            ];
            let t = trial(t0, &pods, &events);
            let ms = |x: Option<f64>| (x.unwrap() * 1000.0).round() as i64;
            assert_eq!(ms(t.reaction), 100);
            assert_eq!(ms(t.scheduled), 5);
            assert_eq!(ms(t.running), 145);
            assert_eq!(ms(t.ready), 20);
            assert_eq!(ms(t.taken), 10);
            assert_eq!(ms(t.started), 10);
            assert_eq!(ms(t.first_start), 290);
            assert_eq!(ms(t.last_done), 600);
            assert_eq!(t.pods, 2);
            let parts = [
                t.reaction,
                t.scheduled,
                t.running,
                t.ready,
                t.taken,
                t.started,
            ];
            let sum: i64 = parts.into_iter().map(ms).sum();
            assert_eq!(sum, ms(t.first_start));
        }

        #[test]
        fn a_ready_mark_seen_after_the_take_is_negative() {
            let t0 = Instant::now();
            let pods = HashMap::from([("a".to_string(), marks(t0, 10, 20, 30, 60, 40))]);
            let t = trial(t0, &pods, &[ev(t0, 50, true, "a")]);
            assert!(t.ready.unwrap() > 0.0);
            assert!(t.taken.unwrap() < 0.0);
        }

        #[test]
        fn nothing_started_gives_no_stages() {
            let t0 = Instant::now();
            let pods = HashMap::from([("a".to_string(), marks(t0, 10, 20, 30, 40, 50))]);
            let t = trial(t0, &pods, &[]);
            assert_eq!(t.reaction, None);
            assert_eq!(t.first_start, None);
            assert_eq!(t.last_done, None);
        }
    }
}

mod report {
    //! The markdown table (median / p90 of each stage per setting) and the raw per-trial lines.

    use crate::stats::median_p90;
    use crate::timeline::Trial;

    pub struct Row {
        pub setting: String,
        pub trials: Vec<Trial>,
    }

    /// Milliseconds, or `-` for never seen.
    pub fn ms(v: Option<f64>) -> String {
        v.map_or("-".into(), |s| format!("{:.0} ms", s * 1000.0))
    }

    type Column = (&'static str, fn(&Trial) -> Option<f64>);

    const COLUMNS: [Column; 8] = [
        ("push → pod created (operator)", |t| t.reaction),
        ("→ scheduled", |t| t.scheduled),
        ("→ container running", |t| t.running),
        ("→ worker ready", |t| t.ready),
        ("→ task taken", |t| t.taken),
        ("→ task started", |t| t.started),
        ("push → first start", |t| t.first_start),
        ("push → last done", |t| t.last_done),
    ];

    fn cell(trials: &[Trial], f: fn(&Trial) -> Option<f64>) -> String {
        let v: Vec<f64> = trials.iter().filter_map(f).collect();
        let missing = trials.len() - v.len();
        let mut s = match median_p90(&v) {
            Some((m, p)) => format!("{:.0} / {:.0}", m * 1000.0, p * 1000.0),
            None => "-".into(),
        };
        if missing > 0 {
            s.push_str(&format!(" ({missing} unseen)"));
        }
        s
    }

    pub fn table(rows: &[Row], tasks: usize, task_ms: u64, max_replicas: u32) -> String {
        let mut out = format!(
            "Cold start from zero workers: {tasks} tasks × {task_ms} ms pushed at once, maxReplicas \
             {max_replicas}; median / p90 in ms over the trials; stages follow the pod that started \
             the first task.\n\n| poll interval | trials |"
        );
        for (name, _) in COLUMNS {
            out.push_str(&format!(" {name} |"));
        }
        out.push_str("\n|---|---|");
        for _ in COLUMNS {
            out.push_str("---|");
        }
        for r in rows {
            out.push_str(&format!("\n| {} | {} |", r.setting, r.trials.len()));
            for (_, f) in COLUMNS {
                out.push_str(&format!(" {} |", cell(&r.trials, f)));
            }
        }
        out
    }

    /// One tab-separated line per trial, stage times in ms, with a header.
    pub fn raw(rows: &[Row]) -> String {
        let mut out = String::from("setting\ttrial\tpods");
        for (name, _) in COLUMNS {
            out.push_str(&format!("\t{name}"));
        }
        out.push('\n');
        for r in rows {
            for (i, t) in r.trials.iter().enumerate() {
                out.push_str(&format!("{}\t{}\t{}", r.setting, i + 1, t.pods));
                for (_, f) in COLUMNS {
                    let v = f(t).map_or("-".into(), |s| format!("{:.1}", s * 1000.0));
                    out.push_str(&format!("\t{v}"));
                }
                out.push('\n');
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn t(first: f64) -> Trial {
            Trial {
                reaction: Some(first / 2.0),
                first_start: Some(first),
                ..Default::default()
            }
        }

        #[test]
        fn table_has_a_row_per_setting_with_median_and_p90() {
            let rows = [Row {
                setting: "5s".into(),
                trials: vec![t(1.0), t(3.0), t(2.0)],
            }];
            let out = table(&rows, 10, 200, 5);
            let line = out.lines().last().unwrap();
            assert!(line.starts_with("| 5s | 3 | 1000 / 1500 |"), "{line}");
            assert!(line.contains("| 2000 / 3000 |"), "{line}");
            assert!(line.contains("- (3 unseen)"), "{line}");
            let header = out.lines().find(|l| l.starts_with("| poll")).unwrap();
            let sep = out.lines().find(|l| l.starts_with("|---")).unwrap();
            assert_eq!(header.matches('|').count(), sep.matches('|').count());
            assert_eq!(header.matches('|').count(), line.matches('|').count());
        }
    }
}

mod observe {
    //! The stamps: pod watch, task events, processing lists. Each stamp is `Instant::now()` when
    //! this process first sees the thing.

    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::{watcher, WatchStreamExt};
    use kube::{Api, ResourceExt};
    use qscaler_crds::names::{keys, LABEL_QWORKER};
    use tokio::sync::Mutex;

    use crate::timeline::{PodMarks, TaskEvent};

    pub type Pods = Arc<Mutex<HashMap<String, PodMarks>>>;

    /// How often the processing lists are read.
    const TAKEN_POLL: Duration = Duration::from_millis(5);

    /// Records first sightings of the namespace's worker pods until aborted.
    pub async fn watch_pods(api: Api<Pod>, pods: Pods) {
        let cfg = watcher::Config::default().labels(LABEL_QWORKER);
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        loop {
            let ev = match stream.try_next().await {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("pod watch: {e}");
                    continue;
                }
            };
            let now = Instant::now();
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    mark(&mut *pods.lock().await, &p, now)
                }
                watcher::Event::Delete(_) | watcher::Event::Init | watcher::Event::InitDone => {}
            }
        }
    }

    fn mark(pods: &mut HashMap<String, PodMarks>, p: &Pod, now: Instant) {
        let qworker = p.labels().get(LABEL_QWORKER).cloned().unwrap_or_default();
        let m = pods.entry(p.name_any()).or_insert_with(|| PodMarks {
            qworker,
            created: now,
            scheduled: None,
            running: None,
            ready: None,
            taken: None,
        });
        let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let running = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
            });
        for (seen, slot) in [(scheduled, &mut m.scheduled), (running, &mut m.running)] {
            if seen && slot.is_none() {
                *slot = Some(now);
            }
        }
    }

    /// Pops `start` / `end` lines off `<queue>:events` as they come, until `ends` end events.
    pub async fn pop_events(
        mut conn: redis::aio::MultiplexedConnection,
        key: String,
        ends: usize,
        out: Arc<Mutex<Vec<TaskEvent>>>,
    ) -> anyhow::Result<()> {
        let mut seen = 0;
        while seen < ends {
            let popped: Option<(String, String)> = redis::cmd("BLPOP")
                .arg(&key)
                .arg(1)
                .query_async(&mut conn)
                .await?;
            let at = Instant::now();
            let Some((_, line)) = popped else { continue };
            let mut parts = line.split_whitespace();
            let kind = parts.next().unwrap_or_default();
            let pod = parts.nth(1).unwrap_or_default().to_string();
            let start = match kind {
                "start" => true,
                "end" => false,
                _ => continue,
            };
            seen += usize::from(!start);
            out.lock().await.push(TaskEvent { at, start, pod });
        }
        Ok(())
    }

    /// Marks when each of the QWorker's pods first holds a task in its processing list, until aborted.
    pub async fn poll_taken(
        mut conn: redis::aio::MultiplexedConnection,
        ns: String,
        qworker: String,
        queue: String,
        pods: Pods,
    ) {
        let mut tick = tokio::time::interval(TAKEN_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let names: Vec<String> = pods
                .lock()
                .await
                .iter()
                .filter(|(_, m)| m.qworker == qworker && m.taken.is_none())
                .map(|(n, _)| n.clone())
                .collect();
            if names.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for n in &names {
                pipe.llen(keys::processing(&queue, &keys::consumer(Some(&ns), n)));
            }
            let lens: Vec<usize> = match pipe.query_async(&mut conn).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("reading processing lists: {e}");
                    continue;
                }
            };
            let now = Instant::now();
            let mut pods = pods.lock().await;
            for (n, len) in names.iter().zip(lens) {
                if let Some(m) = pods.get_mut(n).filter(|_| len > 0) {
                    m.taken = Some(now);
                }
            }
        }
    }
}

mod target {
    //! Where the bench runs: the stand-in cluster (`tests/cluster.sh`) or the real node
    //! (`tests/node.sh`), one namespace for the whole run, one operator per setting, one QWorker per
    //! trial.

    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::process::Stdio;
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime};

    use anyhow::{bail, Context, Result};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
    use kube::Api;
    use qscaler_crds::names::{keys, LABEL_QWORKER};
    use qscaler_crds::{QWorker, ScalerConfig};
    use qscaler_tests::operator::push_subscribers;
    use qscaler_tests::{real_node, Cluster};
    use serde_json::json;
    use tokio::process::{Child, Command};
    use tokio::sync::Mutex;
    use tokio::task::JoinHandle;

    use crate::observe::{self, Pods};
    use crate::supervisor_log;
    use crate::timeline::{self, PodMarks, Trial};

    /// How long setup steps and the cleanup after a trial may take.
    const STEP: Duration = Duration::from_secs(120);

    pub struct Workload {
        pub tasks: usize,
        pub task_ms: u64,
        pub max_replicas: u32,
    }

    pub struct Bench {
        cluster: Cluster,
        ns: String,
        real: bool,
        redis: redis::Client,
        pods: Pods,
        watch: JoinHandle<()>,
        log_dir: PathBuf,
        /// Redis' `notify-keyspace-events` at the start (a push can wake the operator only with them).
        pub keyspace_events: String,
    }

    pub struct RunningOperator {
        child: Child,
        pub log: PathBuf,
    }

    /// Host and port of a `redis://host:port/` URL.
    fn host_port(url: &str) -> Result<(String, u16)> {
        let rest = url.trim_start_matches("redis://").trim_end_matches('/');
        let rest = rest.split('/').next().unwrap_or(rest);
        let (host, port) = rest
            .rsplit_once(':')
            .with_context(|| format!("no port in Redis URL {url}"))?;
        Ok((host.to_string(), port.parse().context("Redis port")?))
    }

    async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(v) = f().await {
                return Ok(v);
            }
            if start.elapsed() > timeout {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    impl Bench {
        /// Attaches, makes the namespace (worker RBAC, the ScalerConfig) and starts the pod watch.
        pub async fn set_up(real: bool) -> Result<Bench> {
            let cluster = if real {
                if !real_node::node_dir().join("kubeconfig").exists() {
                    bail!("no real node: {}", real_node::NODE_HINT);
                }
                real_node::connect().await
            } else {
                if std::env::var_os("KUBECONFIG").is_none() {
                    bail!(
                        "no cluster attached: eval \"$(tests/cluster.sh env)\" ({})",
                        qscaler_tests::CLUSTER_HINT
                    );
                }
                Cluster::connect().await
            };
            if real {
                // An operator installed by the real-node suite would reconcile our QWorkers too.
                let installed = cluster
                    .kubectl(&["get", "deployment", "-n", "qscaler-system", "-o", "name"])
                    .await;
                if !String::from_utf8_lossy(&installed.stdout).trim().is_empty() {
                    bail!(
                        "an operator is installed on the real node (qscaler-system); uninstall it \
                         first (install.sh --uninstall) so only the bench's operator runs"
                    );
                }
            }
            cluster.install_crds().await;
            let ns = cluster.namespace("bench-cold-start").await;
            let (host, port) = host_port(&cluster.redis_url)?;
            if real {
                real_node::install_sh(&cluster, &["--worker-rbac", &ns]);
            } else {
                cluster
                    .grant_pods(&ns, "qscaler-worker", &["get", "watch", "patch"])
                    .await;
            }
            let sc: ScalerConfig = serde_json::from_value(json!({
                "apiVersion": "quickube.com/v1alpha1", "kind": "ScalerConfig",
                "metadata": {"name": "redis"},
                "spec": {"type": "redis", "config": {"host": host, "port": port.to_string()}}
            }))?;
            Api::<ScalerConfig>::namespaced(cluster.client.clone(), &ns)
                .create(&PostParams::default(), &sc)
                .await
                .context("creating the ScalerConfig")?;
            let redis = redis::Client::open(cluster.redis_url.as_str())?;
            let mut conn = redis.get_multiplexed_async_connection().await?;
            let (_, keyspace_events): (String, String) = redis::cmd("CONFIG")
                .arg("GET")
                .arg("notify-keyspace-events")
                .query_async(&mut conn)
                .await
                .context("CONFIG GET notify-keyspace-events")?;
            let pods: Pods = Default::default();
            let watch = tokio::spawn(observe::watch_pods(
                Api::namespaced(cluster.client.clone(), &ns),
                pods.clone(),
            ));
            let log_dir = std::env::temp_dir().join(format!("qscaler-cold-start-{ns}"));
            std::fs::create_dir_all(&log_dir)?;
            eprintln!(
                "[cold-start] namespace {ns} on {}; operator logs in {}",
                if real {
                    "the real node"
                } else {
                    "the stand-in cluster"
                },
                log_dir.display()
            );
            Ok(Bench {
                cluster,
                ns,
                real,
                redis,
                pods,
                watch,
                log_dir,
                keyspace_events,
            })
        }

        async fn conn(
            &self,
            timeout: Option<Duration>,
        ) -> Result<redis::aio::MultiplexedConnection> {
            let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(timeout);
            Ok(self
                .redis
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?)
        }

        /// `CONFIG SET notify-keyspace-events`.
        pub async fn set_keyspace_events(&self, value: &str) -> Result<()> {
            let mut c = self.conn(Some(Duration::from_secs(5))).await?;
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("notify-keyspace-events")
                .arg(value)
                .query_async(&mut c)
                .await
                .context("CONFIG SET notify-keyspace-events")?;
            Ok(())
        }

        /// The operator polling every `interval`; its log is `operator-<log_name>.log`.
        pub fn start_operator(
            &self,
            bin: &Path,
            interval: &str,
            log_name: &str,
        ) -> Result<RunningOperator> {
            let log = self.log_dir.join(format!("operator-{log_name}.log"));
            let out = std::fs::File::create(&log)?;
            let child = Command::new(bin)
                .args(["--namespace", &self.ns, "--leader-elect=false"])
                .args(["--metrics-bind-address", "127.0.0.1:0"])
                .args(["--health-probe-bind-address", "127.0.0.1:0"])
                .args(["--poll-interval", interval])
                .arg("--kubeconfig")
                .arg(&self.cluster.kubeconfig)
                .stdout(Stdio::from(out.try_clone()?))
                .stderr(Stdio::from(out))
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            Ok(RunningOperator { child, log })
        }

        pub async fn stop_operator(&self, mut op: RunningOperator) {
            if let Some(pid) = op.child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(Duration::from_secs(20), op.child.wait())
                .await
                .is_err()
            {
                let _ = op.child.kill().await;
            }
        }

        fn qworker(&self, name: &str, queue: &str, w: &Workload) -> Result<QWorker> {
            let (image, account) = if self.real {
                (real_node::image("test-worker"), "qscaler-worker")
            } else {
                ("qscaler/qsupervisor".to_string(), "default")
            };
            let args = [
                "--task",
                "--",
                "qscaler-test-worker",
                "--stdin-task",
                "--task-ms",
            ];
            let mut args: Vec<String> = args.map(str::to_owned).to_vec();
            args.push(w.task_ms.to_string());
            Ok(serde_json::from_value(json!({
                "apiVersion": "quickube.com/v1alpha1", "kind": "QWorker",
                "metadata": {"name": name},
                "spec": {
                    "podSpec": {"serviceAccountName": account, "terminationGracePeriodSeconds": 10,
                                "containers": [{"name": "worker", "image": image, "args": args,
                                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
                    "scaleConfig": {"scalerConfigRef": "redis", "queue": queue, "minReplicas": 0,
                                    "maxReplicas": w.max_replicas, "scalingFactor": 1,
                                    "scaleDownStabilizationSeconds": 1}
                }
            }))?)
        }

        /// One trial: a fresh QWorker, seen by the operator; after `phase`, N tasks pushed at once;
        /// done when every `end` event came; then the QWorker deleted and its pods gone.
        pub async fn trial(
            &self,
            name: &str,
            w: &Workload,
            phase: Duration,
            timeout: Duration,
        ) -> Result<Trial> {
            let queue = format!("{}-{name}", self.ns);
            let events_key = format!("{queue}:events");
            let mut conn = self.conn(Some(Duration::from_secs(10))).await?;
            let _: () = redis::cmd("DEL")
                .arg(&queue)
                .arg(&events_key)
                .query_async(&mut conn)
                .await?;
            let api: Api<QWorker> = Api::namespaced(self.cluster.client.clone(), &self.ns);
            api.create(&PostParams::default(), &self.qworker(name, &queue, w)?)
                .await
                .with_context(|| format!("creating QWorker {name}"))?;
            poll("the operator to see the QWorker", STEP, || async {
                api.get(name)
                    .await
                    .ok()?
                    .status?
                    .observed_generation
                    .map(|_| ())
            })
            .await?;
            // The operator subscribes to the queue's pushes once its poller knows the QWorker,
            // whether notifications are on or not: a push before that waits for a poll in any
            // setting.
            poll(
                "the operator to subscribe to the queue's pushes",
                STEP,
                || async { (push_subscribers(&mut conn.clone(), &queue).await? > 0).then_some(()) },
            )
            .await?;
            tokio::time::sleep(phase).await;

            let events = Arc::new(Mutex::new(Vec::new()));
            let popper = tokio::spawn(observe::pop_events(
                self.conn(Some(Duration::from_secs(10))).await?,
                events_key.clone(),
                w.tasks,
                events.clone(),
            ));
            let taken = tokio::spawn(observe::poll_taken(
                self.conn(Some(Duration::from_secs(5))).await?,
                self.ns.clone(),
                name.to_string(),
                queue.clone(),
                self.pods.clone(),
            ));
            let payloads = vec![w.task_ms.to_string(); w.tasks];
            let pushed = Instant::now();
            let pushed_wall = SystemTime::now();
            let _: () = redis::cmd("LPUSH")
                .arg(&queue)
                .arg(&payloads)
                .query_async(&mut conn)
                .await?;
            let done = tokio::time::timeout(timeout, popper).await;
            taken.abort();
            match done {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(e.context("popping task events")),
                Ok(Err(e)) => bail!("the event popper failed: {e}"),
                Err(_) => bail!(
                    "not every task ended within {timeout:?} ({} events)",
                    events.lock().await.len()
                ),
            }
            let mut marks: HashMap<String, PodMarks> = self
                .pods
                .lock()
                .await
                .iter()
                .filter(|(_, m)| m.qworker == name)
                .map(|(n, m)| (n.clone(), m.clone()))
                .collect();
            // Worker ready and task taken: from the logs, read before the pods go.
            let on_our_clock = |t: k8s_openapi::jiff::Timestamp| match SystemTime::from(t)
                .duration_since(pushed_wall)
            {
                Ok(d) => pushed + d,
                Err(e) => pushed - e.duration(),
            };
            for (pod, m) in marks.iter_mut() {
                let log = self.worker_log(pod).await;
                m.ready = supervisor_log::pod_read_at(&log).map(on_our_clock);
                if let Some(t) = supervisor_log::first_take_at(&log) {
                    m.taken = Some(on_our_clock(t));
                }
            }
            for (pod, m) in &marks {
                let rel = |i: Option<Instant>| {
                    i.map(|i| format!("{:.1}", timeline::signed_secs(pushed, i) * 1000.0))
                };
                tracing::debug!(
                    pod,
                    created = rel(Some(m.created)),
                    scheduled = rel(m.scheduled),
                    running = rel(m.running),
                    ready = rel(m.ready),
                    taken = rel(m.taken),
                    "ms after the push"
                );
            }
            let t = timeline::trial(pushed, &marks, &events.lock().await);

            self.delete_qworker(name).await?;
            let mut keys_to_drop = vec![queue.clone(), events_key, keys::retries(&queue)];
            keys_to_drop.extend(
                marks
                    .keys()
                    .map(|p| keys::processing(&queue, &keys::consumer(Some(&self.ns), p))),
            );
            let _: () = redis::cmd("DEL")
                .arg(&keys_to_drop)
                .query_async(&mut conn)
                .await?;
            Ok(t)
        }

        /// The worker container's log: the stand-in kubelet's file, or `kubectl logs` on the real node.
        async fn worker_log(&self, pod: &str) -> String {
            if self.real {
                real_node::logs(&self.cluster, &self.ns, pod, "worker")
            } else {
                self.cluster.pod_log(&self.ns, pod, "worker")
            }
        }

        /// Deletes the QWorker (its finalizer needs the operator) and waits until it and its pods are gone.
        async fn delete_qworker(&self, name: &str) -> Result<()> {
            let api: Api<QWorker> = Api::namespaced(self.cluster.client.clone(), &self.ns);
            api.delete(name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting QWorker {name}"))?;
            let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.ns);
            let selector = format!("{LABEL_QWORKER}={name}");
            poll(
                &format!("QWorker {name} and its pods gone"),
                STEP,
                || async {
                    if api.get_opt(name).await.ok()?.is_some() {
                        return None;
                    }
                    let left = pods
                        .list(&ListParams::default().labels(&selector))
                        .await
                        .ok()?;
                    left.items.is_empty().then_some(())
                },
            )
            .await
        }

        /// Deletes what the run left: QWorkers and the ScalerConfig (finalizers released: no operator
        /// runs now), the namespace; stops the pod watch.
        pub async fn tear_down(self) {
            self.watch.abort();
            if let Err(e) = self.set_keyspace_events(&self.keyspace_events).await {
                eprintln!("[cold-start] could not restore notify-keyspace-events: {e:#}");
            }
            let api: Api<QWorker> = Api::namespaced(self.cluster.client.clone(), &self.ns);
            if let Ok(left) = api.list(&ListParams::default()).await {
                for qw in left.items {
                    let Some(name) = qw.metadata.name else {
                        continue;
                    };
                    let release = json!({"metadata": {"finalizers": null}});
                    let _ = api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&release))
                        .await;
                }
            }
            let scs: Api<ScalerConfig> = Api::namespaced(self.cluster.client.clone(), &self.ns);
            let release = json!({"metadata": {"finalizers": null}});
            let _ = scs
                .patch("redis", &PatchParams::default(), &Patch::Merge(&release))
                .await;
            self.cluster.delete_namespace(&self.ns).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_is_in_the_unit_interval() {
        let mut r = Rng::seeded();
        let v: Vec<f64> = (0..1000).map(|_| r.unit()).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(v.iter().any(|x| *x < 0.5) && v.iter().any(|x| *x >= 0.5));
    }
}
