//! Black-box tests of the options borrowed from tini and the operator: `--remap-exit` (`-e`), its
//! usage errors, and `--log-format json`.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(10);

/// Runs `qsupervisor ARGS` as an ordinary process to its end, with its stderr captured.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = Command::new(bin())
        .args(args)
        .env("RUST_LOG", "debug")
        .env_remove("QSCALER_LOG_FORMAT")
        .env_remove("QSCALER_REMAP_EXIT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // wait_with_output has no timeout: a watchdog kills a supervisor that hangs.
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    if rx.recv_timeout(T).is_err() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("qsupervisor {args:?} did not exit within {T:?}");
    }
    waiter.join().unwrap().unwrap()
}

fn exit_code(args: &[&str], env: &[(&str, &str)]) -> i32 {
    code(run(args, env).status)
}

/// `qsupervisor [OPTIONS] -- sh -c SCRIPT`.
fn with_worker<'a>(options: &[&'a str], script: &'a str) -> Vec<&'a str> {
    let mut v = vec!["--sample-interval", "0"];
    v.extend_from_slice(options);
    v.extend_from_slice(&["--", "sh", "-c", script]);
    v
}

#[test]
fn remap_exit_turns_the_listed_worker_codes_into_0() {
    let exits_143 = "exit 143";
    let killed_by_term = "kill -TERM $$";
    assert_eq!(exit_code(&with_worker(&[], exits_143), &[]), 143);
    assert_eq!(exit_code(&with_worker(&["-e", "143"], exits_143), &[]), 0);
    // A signal's 128+N is remapped like an exit code, as tini does.
    assert_eq!(exit_code(&with_worker(&[], killed_by_term), &[]), 143);
    assert_eq!(
        exit_code(&with_worker(&["-e", "143"], killed_by_term), &[]),
        0
    );
    // Only the listed codes: 3 stays 3.
    assert_eq!(exit_code(&with_worker(&["-e", "143"], "exit 3"), &[]), 3);
    // Repeated, comma-separated, the long name and the environment variable.
    assert_eq!(
        exit_code(&with_worker(&["-e", "1", "-e", "3"], "exit 3"), &[]),
        0
    );
    assert_eq!(
        exit_code(&with_worker(&["--remap-exit", "1,3"], "exit 3"), &[]),
        0
    );
    assert_eq!(
        exit_code(
            &with_worker(&[], exits_143),
            &[("QSCALER_REMAP_EXIT", "143")]
        ),
        0
    );
}

#[test]
fn remap_exit_as_pid_1() {
    let mut c = in_namespace(&[
        "-e",
        "143",
        "--sample-interval",
        "0",
        "--",
        "sh",
        "-c",
        "exit 143",
    ]);
    assert_eq!(code(wait_exit(&mut c, T)), 0);
}

#[test]
fn invalid_options_are_usage_errors_before_the_worker_starts() {
    let dir = scratch("usage-errors");
    let ran = dir.join("ran");
    let script = format!("touch {}", ran.display());
    for (options, wanted) in [
        (vec!["-e", "256"], "256"),
        (vec!["-e", "x"], "'x'"),
        (vec!["-e", "-1"], "-1"),
        (vec!["--remap-exit", "1,,2"], "--remap-exit"),
        (vec!["-p", "NOPE"], "NOPE"),
        (vec!["--log-format", "xml"], "xml"),
    ] {
        let out = run(&with_worker(&options, &script), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(out.status), 2, "{options:?}: {stderr}");
        assert!(stderr.contains("error:"), "{options:?}: {stderr}");
        assert!(stderr.contains(wanted), "{options:?}: {stderr}");
        assert!(!ran.exists(), "{options:?}: the worker ran");
    }
    let out = run(
        &with_worker(&[], "exit 0"),
        &[("QSCALER_REMAP_EXIT", "300")],
    );
    assert_eq!(code(out.status), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("300"));
}

/// Every stderr line as a JSON object; panics on a line that is not one.
fn json_lines(stderr: &[u8]) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(stderr);
    assert!(!text.trim().is_empty(), "no log at all");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\nall:\n{text}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

fn check_shape(lines: &[serde_json::Value]) {
    for v in lines {
        assert!(v["timestamp"].is_string(), "{v}");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&v["level"].as_str().unwrap_or("")),
            "{v}"
        );
        assert!(v["fields"]["message"].is_string(), "{v}");
        assert!(v["target"].is_string(), "{v}");
    }
    assert!(
        lines.iter().any(|v| v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exit code 3"))),
        "no line tells the exit code: {lines:?}"
    );
}

#[test]
fn json_logs_every_line_is_a_json_object() {
    let out = run(&with_worker(&["--log-format", "json"], "exit 3"), &[]);
    assert_eq!(code(out.status), 3);
    check_shape(&json_lines(&out.stderr));

    let out = run(
        &with_worker(&[], "exit 3"),
        &[("QSCALER_LOG_FORMAT", "json")],
    );
    assert_eq!(code(out.status), 3);
    check_shape(&json_lines(&out.stderr));

    // The default stays text: the same run's lines are not JSON.
    let out = run(&with_worker(&[], "exit 3"), &[]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("exit code 3"), "{text}");
    assert!(text
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()));
}
