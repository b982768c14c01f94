//! `kubectl qworker timeline` over a real wave: the operator scales a task-mode QWorker from 0 to 2
//! workers and back to 0 while the plugin records it; the SVG must have one row per pod that
//! existed (as the test's own 50 ms sampler saw them), busy stretches, and the scale-up and
//! scale-down Events in order. The saved samples are drawn again as a PNG without a cluster.
//!
//! Needs the local cluster (`tests/cluster.sh up && eval "$(tests/cluster.sh env)"`) and the
//! binaries built (`cargo build --workspace --bins`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use qscaler_tests::{wait_for, workspace_bin, Cluster};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use common::*;

/// The plugin itself (not through kubectl, so that the signal reaches it directly).
fn plugin(kubeconfig: &Path, args: &[&str]) -> Command {
    let bin = workspace_bin("kubectl-qworker");
    assert!(
        bin.is_file(),
        "{} is missing: run cargo build -p kubectl-qworker",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn finish(cmd: &mut Command, what: &str) -> Output {
    let out = tokio::time::timeout(T, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {T:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!(
        "$ {what}\n{}{}(exit {:?})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
}

fn scratch_dir(ns: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qscaler-timeline-e2e-{ns}"));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Every `<g>` of the SVG: its class, its `data-*` attributes, the classes of its rects and its
/// texts.
struct Svg {
    groups: Vec<Group>,
}

type Group = (String, Vec<(String, String)>, Vec<String>, Vec<String>);

impl Svg {
    fn parse(text: &str) -> Svg {
        let doc = roxmltree::Document::parse(text).expect("the timeline is well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let groups = root
            .descendants()
            .filter(|n| n.has_tag_name("g"))
            .map(|g| {
                let data = g
                    .attributes()
                    .filter_map(|a| {
                        a.name()
                            .strip_prefix("data-")
                            .map(|k| (k.to_owned(), a.value().to_owned()))
                    })
                    .collect();
                let rects = g
                    .children()
                    .filter(|c| c.has_tag_name("rect"))
                    .filter_map(|r| r.attribute("class").map(str::to_owned))
                    .collect();
                let texts = g
                    .children()
                    .filter(|c| c.has_tag_name("text"))
                    .filter_map(|t| t.text().map(str::to_owned))
                    .collect();
                (
                    g.attribute("class").unwrap_or("").to_owned(),
                    data,
                    rects,
                    texts,
                )
            })
            .collect();
        Svg { groups }
    }

    fn of_class(&self, class: &str) -> Vec<&Group> {
        self.groups.iter().filter(|g| g.0 == class).collect()
    }
}

fn data<'a>(attrs: &'a [(String, String)], key: &str) -> &'a str {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no data-{key} in {attrs:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_is_drawn_with_a_row_per_pod_and_its_scale_events() {
    let (cluster, ns, op, _guard) = setup("timeline", None, &[]).await;
    let queue = format!("{ns}-jobs");
    let mut conn = cluster.redis().await;
    // 8 tasks of 1.5 s at one worker per 4 queued: 2 workers, then none.
    let mut qw = qworker(
        "w",
        &queue,
        &[],
        json!({"maxReplicas": 2, "scalingFactor": 0.25, "scaleDownStabilizationSeconds": 1}),
    );
    qw["spec"]["podSpec"]["containers"][0]["args"] =
        json!(["--task", "--", "sh", "-c", "cat >/dev/null; sleep 1.5"]);
    create_qworker(&cluster, &ns, qw).await;
    // The operator announces a scale only once it has a status to scale from.
    wait_for("the operator has read the empty queue", T, || async {
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        (st.queue_depth == Some(0)).then_some(())
    })
    .await;

    let dir = scratch_dir(&ns);
    let (svg, samples, png) = (
        dir.join("run.svg"),
        dir.join("run.json"),
        dir.join("run.png"),
    );
    let (seen, sampler) = sample(&cluster, &ns, "w");
    let mut recorder = plugin(
        &cluster.kubeconfig,
        &[
            "-n",
            &ns,
            "timeline",
            "w",
            "--for",
            "5m",
            "--interval",
            "500ms",
            "-o",
            &svg.display().to_string(),
            "--save-samples",
            &samples.display().to_string(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start kubectl-qworker timeline");
    let mut stderr = BufReader::new(recorder.stderr.take().expect("stderr")).lines();
    let first = tokio::time::timeout(T, stderr.next_line())
        .await
        .expect("a first line from the recorder")
        .expect("read stderr")
        .unwrap_or_default();
    assert!(
        first.starts_with(&format!("recording qworker {ns}/w every 500ms for 5m")),
        "{first}"
    );
    let rest = tokio::spawn(async move {
        let mut all = String::new();
        while let Ok(Some(line)) = stderr.next_line().await {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });

    push_tasks(&mut conn, &queue, 0..8).await;
    wait_for("2 workers desired", T, || async {
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        (st.desired_replicas == 2).then_some(())
    })
    .await;
    wait_for("all 8 tasks done and no worker left", T, || async {
        let st = get_qworker(&cluster, &ns, "w").await.status?;
        let pods = worker_pods(&cluster, &ns, "w").await;
        (st.queue_depth == Some(0)
            && st.in_flight == Some(0)
            && st.current_replicas == 0
            && pods.is_empty())
        .then_some(())
    })
    .await;
    wait_for("the ScaledDown Event", T, || async {
        let notes = events_with_reason(&cluster, &ns, "w", "ScaledDown").await;
        (!notes.is_empty()).then_some(())
    })
    .await;
    sampler.abort();

    // Ctrl-C ends the recording; the picture is still written.
    let pid = recorder.id().expect("the recorder's pid").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(kill.success());
    let out = tokio::time::timeout(T, recorder.wait_with_output())
        .await
        .expect("the recorder stops within a minute of Ctrl-C")
        .expect("wait for the recorder");
    let log = rest.await.unwrap_or_default();
    eprintln!("recorder stderr:\n{first}\n{log}");
    assert!(out.status.success(), "timeline failed:\n{log}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("timeline written to {}\n", svg.display())
    );
    assert!(log.contains("recorded "), "{log}");

    // One row per pod that existed, as the test's own sampler saw them.
    let text = std::fs::read_to_string(&svg).expect("the SVG was written");
    let picture = Svg::parse(&text);
    let rows = picture.of_class("pod-row");
    let drawn: BTreeSet<String> = rows.iter().map(|g| data(&g.1, "pod").to_owned()).collect();
    let existed = seen.lock().unwrap_or_else(|e| e.into_inner()).names.clone();
    assert!(existed.len() >= 2, "the wave had 2 workers: {existed:?}");
    assert_eq!(drawn, existed, "pod rows vs pods that existed");
    assert_eq!(rows.len(), drawn.len(), "one row per pod");
    for (_, attrs, rects, _) in &rows {
        assert!(
            !rects.is_empty(),
            "pod {} has no segment",
            data(attrs, "pod")
        );
    }
    assert!(
        rows.iter()
            .any(|(_, _, rects, _)| rects.iter().any(|c| c == "seg busy")),
        "no busy stretch drawn for task-mode workers that ran 8 tasks"
    );
    // The scale events, in time order, each a marker on the axis.
    let events = picture.of_class("event");
    let at = |reason: &str| -> Vec<f64> {
        events
            .iter()
            .filter(|g| data(&g.1, "reason") == reason)
            .map(|g| data(&g.1, "t").parse().expect("data-t is a number"))
            .collect()
    };
    let (ups, downs) = (at("ScaledUp"), at("ScaledDown"));
    assert!(!ups.is_empty(), "no ScaledUp marker in {:?}", events);
    assert!(!downs.is_empty(), "no ScaledDown marker in {:?}", events);
    assert!(
        ups[0] < downs[downs.len() - 1],
        "scaled up at {ups:?}, down at {downs:?}"
    );
    // The wave ended at 0 workers, and the picture says so (even when the Event is a repeat,
    // whose note is its first occurrence's).
    let labels: Vec<&str> = events
        .iter()
        .filter(|g| data(&g.1, "reason") == "ScaledDown")
        .flat_map(|g| g.3.iter().map(String::as_str))
        .collect();
    assert!(labels.contains(&"↓0"), "scale-down labels {labels:?}");
    let series: BTreeSet<&str> = picture
        .of_class("series")
        .iter()
        .map(|g| data(&g.1, "series"))
        .collect();
    assert_eq!(
        series,
        BTreeSet::from(["queue depth", "in flight", "desired", "current", "draining"])
    );

    // The saved samples agree, and draw again as a PNG with no cluster at all.
    let saved: Value =
        serde_json::from_slice(&std::fs::read(&samples).expect("samples written")).expect("JSON");
    assert_eq!(saved["qworker"], "w");
    let peak = saved["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(|s| s["desired"].as_i64())
        .max();
    assert_eq!(peak, Some(2), "the samples saw 2 workers desired");
    // The last sample is taken at Ctrl-C, after the test saw the wave end.
    let last = saved["samples"]
        .as_array()
        .and_then(|s| s.last())
        .expect("a last sample");
    assert_eq!(
        (&last["pods"], &last["current"]),
        (&json!([]), &json!(0)),
        "{last}"
    );
    let out = finish(
        &mut plugin(
            Path::new("/nonexistent/kubeconfig"),
            &[
                "timeline",
                "--from-samples",
                &samples.display().to_string(),
                "-o",
                &png.display().to_string(),
            ],
        ),
        "kubectl-qworker timeline --from-samples run.json -o run.png",
    )
    .await;
    if out.status.success() {
        let bytes = std::fs::read(&png).expect("the PNG was written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
        let width = u32::from_be_bytes(bytes[16..20].try_into().expect("IHDR width"));
        assert_eq!(width, 2400, "the 1200 px picture at 2x");
        eprintln!("look at it: {}", png.display());
    } else {
        // Only a machine without fonts may refuse, and clearly, rather than draw no text.
        assert!(
            !fonts_installed(),
            "the PNG failed though fonts are installed"
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no font found"));
    }
    drop(op);
}

/// Whether the usual font directories hold any font file.
fn fonts_installed() -> bool {
    fn any_font(dir: &Path) -> bool {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let p = e.path();
                if p.is_dir() {
                    any_font(&p)
                } else {
                    p.extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| matches!(x, "ttf" | "otf" | "ttc"))
                }
            })
        })
    }
    ["/usr/share/fonts", "/usr/local/share/fonts"]
        .iter()
        .any(|d| any_font(Path::new(d)))
}

#[tokio::test]
async fn a_missing_qworker_or_a_bad_file_name_fails_before_recording() {
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace("timeline-errors").await;
    let _guard = NamespaceGuard {
        kubeconfig: cluster.kubeconfig.clone(),
        ns: ns.clone(),
    };
    let dir = scratch_dir(&ns);
    let svg = dir.join("x.svg").display().to_string();
    let out = finish(
        &mut plugin(
            &cluster.kubeconfig,
            &["-n", &ns, "timeline", "nope", "--for", "1s", "-o", &svg],
        ),
        "timeline nope",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "qworkers.quickube.com \"nope\" not found in namespace {ns}"
        )),
        "{err}"
    );
    assert!(
        !Path::new(&svg).exists(),
        "nothing drawn for a missing QWorker"
    );

    create_qworker(&cluster, &ns, idle_qworker("w", "jobs", json!({}))).await;
    let txt = dir.join("x.txt").display().to_string();
    let out = finish(
        &mut plugin(
            &cluster.kubeconfig,
            &["-n", &ns, "timeline", "w", "--for", "1m", "-o", &txt],
        ),
        "timeline w -o x.txt",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("name it *.svg or *.png"));

    // --for ends the recording by itself.
    let out = finish(
        &mut plugin(
            &cluster.kubeconfig,
            &[
                "-n",
                &ns,
                "timeline",
                "w",
                "--for",
                "2s",
                "--interval",
                "500ms",
                "-o",
                &svg,
            ],
        ),
        "timeline w --for 2s",
    )
    .await;
    assert!(out.status.success());
    let picture = Svg::parse(&std::fs::read_to_string(&svg).expect("the SVG was written"));
    assert!(
        picture.of_class("pod-row").is_empty(),
        "no operator: no pods"
    );
    assert_eq!(picture.of_class("series").len(), 5);
}
