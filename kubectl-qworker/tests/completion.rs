//! The completion script and the completion helper as a shell and kubectl run them, and the exit
//! codes of usage errors; no cluster (names from a cluster are in tests/tests/plugin_e2e.rs).

use std::process::{Command, Output};

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-qworker");
const HELPER: &str = env!("CARGO_BIN_EXE_kubectl_complete-qworker");

/// A process with no kubeconfig and no in-cluster account: nothing can reach a cluster.
fn isolated(bin: &str, args: &[&str]) -> Output {
    let home = std::env::temp_dir().join(format!("qworker-completion-{}", std::process::id()));
    Command::new(bin)
        .args(args)
        .env("KUBECONFIG", home.join("absent"))
        .env("HOME", &home)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

/// What bash offers for `words` (the last one being completed) with the generated script loaded.
fn bash_offers(words: &[&str]) -> Vec<String> {
    let script = isolated(PLUGIN, &["completion", "bash"]);
    assert!(script.status.success());
    let path = std::env::temp_dir().join(format!("qworker-{}.bash", std::process::id()));
    std::fs::write(&path, &script.stdout).expect("write the script");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let (cur, prev) = (words[words.len() - 1], words[words.len() - 2]);
    let program = format!(
        "source '{}'; COMP_WORDS=(kubectl-qworker {}); COMP_CWORD={}; \
         _kubectl__qworker kubectl-qworker '{cur}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display(),
        quoted.join(" "),
        words.len()
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_bash_script_completes_subcommands_and_their_flags() {
    assert_eq!(bash_offers(&["rollout", "st"]), ["status"]);
    assert_eq!(bash_offers(&["top", "--sort-by", ""]), ["cpu", "memory"]);
    assert_eq!(bash_offers(&["top", "--wa"]), ["--watch"]);
    assert_eq!(bash_offers(&["rollout", "undo", "--to"]), ["--to-revision"]);
}

#[test]
fn the_helper_answers_in_cobras_format_and_stays_quiet_without_a_cluster() {
    let out = isolated(HELPER, &["rollout", "st"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "status\tWatch a rollout until it finishes, like `kubectl rollout status`\n:4\n"
    );
    // A QWorker name is wanted, but there is no cluster: no names, no error.
    let out = isolated(HELPER, &["rollout", "status", ""]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), ":4\n");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // kubectl may pass no word at all.
    let out = isolated(HELPER, &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("rollout\t"));
}

#[test]
fn usage_errors_exit_1_like_kubectl() {
    for args in [
        &["top", "--sort-by=disk"][..],
        &["rollout", "status"],
        &["no-such-command"],
        &["completion", "cmd.exe"],
        &[],
    ] {
        let out = isolated(PLUGIN, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        // What is wrong, or (no subcommand) the help.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: ") || err.contains("Usage: kubectl qworker"),
            "{args:?}: {err}"
        );
    }
    for args in [&["--help"][..], &["top", "-h"], &["--version"]] {
        let out = isolated(PLUGIN, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
    let zsh = isolated(PLUGIN, &["completion", "zsh"]);
    assert!(zsh.status.success());
    assert!(String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef kubectl-qworker"));
}
