//! Task mode over TLS against a real redis-server that speaks only TLS (`--port 0`), with a CA and
//! server certificate made by the `openssl` CLI for this run. The supervisor gets its settings
//! through the same environment variables the operator injects into worker pods.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use qscaler_crds::names::env;
use qscaler_tests::tls::TestCa;
use redis::Commands;

const T: Duration = Duration::from_secs(30);

/// A TLS-only redis-server on a free loopback port.
struct TlsRedis {
    port: u16,
    dir: PathBuf,
    ca_pem: String,
    _server: Guard,
}

impl TlsRedis {
    fn start(name: &str) -> TlsRedis {
        let dir = scratch(name);
        let tls = TestCa::make(&dir);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(&tls.cert)
            .arg("--tls-key-file")
            .arg(&tls.key)
            .arg("--tls-ca-cert-file")
            .arg(&tls.ca)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let r = TlsRedis {
            port,
            dir,
            ca_pem: tls.ca_pem.clone(),
            _server: Guard(server),
        };
        wait_for(T, "the TLS redis-server to answer", || {
            let mut c = r.client().get_connection().ok()?;
            redis::cmd("PING").query::<String>(&mut c).ok()
        });
        r
    }

    /// The test's own client, verifying the server with the test CA.
    fn client(&self) -> redis::Client {
        redis::Client::build_with_tls(
            format!("rediss://127.0.0.1:{}/0", self.port),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(self.ca_pem.clone().into_bytes()),
            },
        )
        .unwrap()
    }

    fn conn(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }
}

/// qsupervisor in task mode with the broker env as the operator injects it (`ca`: the CA bundle of
/// the secretKeyRef, `insecure`: tls.insecureSkipVerify); its log goes to `log`.
fn supervisor(redis: &TlsRedis, ca: Option<&str>, insecure: bool, out: &Path, log: &Path) -> Guard {
    let mut cmd = Command::new(BIN);
    for var in [env::REDIS_TLS_CA, env::REDIS_PASSWORD, "QSCALER_REDIS_URL"] {
        cmd.env_remove(var);
    }
    cmd.args(["--task", "--pod-name", "p1", "--sample-interval", "0"])
        .env(env::QUEUE, "jobs")
        .env(env::REDIS_HOST, "127.0.0.1")
        .env(env::REDIS_PORT, redis.port.to_string())
        .env(env::REDIS_DB, "0")
        .env(env::REDIS_TLS, "true")
        .env(env::REDIS_TLS_INSECURE, insecure.to_string())
        .env("RUST_LOG", "info")
        .args(["--", "sh", "-c"])
        .arg(format!("cat >> {o}; echo >> {o}", o = out.display()))
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if let Some(ca) = ca {
        cmd.env(env::REDIS_TLS_CA, ca);
    }
    Guard(cmd.spawn().unwrap())
}

fn lines(path: &Path) -> Vec<String> {
    read(path).lines().map(str::to_owned).collect()
}

#[test]
fn tasks_run_over_tls_verified_with_the_given_ca() {
    let redis = TlsRedis::start("tls-ca");
    let (out, log) = (redis.dir.join("out"), redis.dir.join("log"));
    let mut c = redis.conn();
    for i in 1..=5 {
        let _: () = c.lpush("jobs", format!("task-{i}")).unwrap();
    }
    let mut sup = supervisor(&redis, Some(&redis.ca_pem), false, &out, &log);
    wait_for(T, "5 tasks over TLS", || {
        (lines(&out).len() >= 5).then_some(())
    });
    assert_eq!(
        lines(&out),
        (1..=5).map(|i| format!("task-{i}")).collect::<Vec<_>>()
    );
    wait_for(T, "the processing list to empty", || {
        (c.llen::<_, usize>("{jobs}:processing:p1").unwrap() == 0).then_some(())
    });
    assert_eq!(c.llen::<_, usize>("jobs").unwrap(), 0);
    // The log names the connection without the CA itself.
    let text = read(&log);
    assert!(!text.contains("BEGIN CERTIFICATE"), "{text}");
    kill(sup.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut sup, Duration::from_secs(5))), 0);
}

#[test]
fn without_the_ca_the_server_is_refused_unless_verification_is_skipped() {
    let redis = TlsRedis::start("tls-noca");
    let (out, log) = (redis.dir.join("out"), redis.dir.join("log"));
    let mut c = redis.conn();
    for i in 1..=3 {
        let _: () = c.lpush("jobs", format!("task-{i}")).unwrap();
    }
    // System roots only: the test CA is unknown, so no connection and no task is taken.
    let mut sup = supervisor(&redis, None, false, &out, &log);
    let said = wait_for(T, "a certificate error in the log", || {
        let text = read(&log);
        text.lines()
            .find(|l| l.contains("certificate") || l.contains("UnknownIssuer"))
            .map(str::to_owned)
    });
    assert!(said.contains("UnknownIssuer"), "{said}");
    assert!(lines(&out).is_empty());
    assert_eq!(c.llen::<_, usize>("jobs").unwrap(), 3);
    kill(sup.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut sup, Duration::from_secs(5))), 0);

    // tls.insecureSkipVerify: the same server is accepted without any CA.
    let mut sup = supervisor(&redis, None, true, &out, &log);
    wait_for(T, "3 tasks without verification", || {
        (lines(&out).len() >= 3).then_some(())
    });
    kill(sup.id() as i32, Signal::SIGTERM);
    assert_eq!(code(wait_exit(&mut sup, Duration::from_secs(5))), 0);
}

#[test]
fn a_ca_that_is_not_pem_stops_the_supervisor_at_start() {
    let dir = scratch("tls-badca");
    let log = dir.join("log");
    let mut sup = Command::new(BIN)
        .args([
            "--task",
            "--queue",
            "q",
            "--redis-host",
            "127.0.0.1",
            "--redis-tls",
        ])
        .args(["--sample-interval", "0", "--", "cat"])
        .env(env::REDIS_TLS_CA, "not a certificate")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert_eq!(code(wait_exit(&mut sup, T)), 2);
    let text = read(&log);
    assert!(
        text.contains("QSCALER_REDIS_TLS_CA holds no PEM certificate"),
        "{text}"
    );
}
