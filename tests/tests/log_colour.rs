//! Logs that are not on a terminal carry no ANSI colour codes: `kubectl logs` of the operator showed
//! `\x1b[32m INFO\x1b[0m` on a real node. Both binaries run here with their output piped, as a
//! container runtime runs them. Needs no cluster: the operator is pointed at a closed port, logs its
//! start and the failed CRD check, and exits.

use std::process::Stdio;
use std::time::Duration;

use qscaler_tests::workspace_bin;
use tokio::process::Command;

const T: Duration = Duration::from_secs(60);

fn assert_plain(what: &str, text: &str) {
    assert!(
        !text.contains("\x1b["),
        "{what} wrote ANSI escape codes to a pipe:\n{}",
        text.escape_debug()
    );
}

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let port = listener.local_addr().expect("its address").port();
    drop(listener);
    port
}

async fn output(cmd: &mut Command) -> (Option<i32>, String) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("NO_COLOR")
        .kill_on_drop(true)
        .spawn()
        .expect("spawning");
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .expect("exited in time")
        .expect("collecting its output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn the_operator_does_not_colour_piped_logs() {
    let bin = workspace_bin("qscaler-operator");
    assert!(
        bin.exists(),
        "{} missing: cargo build --workspace --bins",
        bin.display()
    );
    let dir = std::env::temp_dir().join(format!("qscaler-log-colour-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n",
            closed_port()
        ),
    )
    .expect("writing the kubeconfig");
    let (code, text) = output(
        Command::new(bin)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--namespace", "nowhere", "--leader-elect=false"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info"),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_ne!(code, Some(0), "{text}");
    // It did log (one line at start, at info), so the check below is not vacuous.
    assert!(text.contains("starting qscaler-operator"), "{text}");
    assert!(text.contains("INFO"), "{text}");
    assert_plain("qscaler-operator", &text);
}

#[tokio::test]
async fn qsupervisor_does_not_colour_piped_logs() {
    let bin = workspace_bin("qsupervisor");
    assert!(
        bin.exists(),
        "{} missing: cargo build --workspace --bins",
        bin.display()
    );
    let (code, text) = output(
        Command::new(bin)
            .args(["--sample-interval", "0", "--", "sh", "-c", "exit 3"])
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env("RUST_LOG", "debug"),
    )
    .await;
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("exit code 3"), "{text}");
    assert_plain("qsupervisor", &text);
}
