//! A small queue worker for wrap-mode tests, shaped like Celery/RQ: it consumes a Redis list with
//! BRPOP, records `start <payload> <pod>` and `end <payload> <pod>` on an events list, and on SIGTERM
//! finishes the current task and exits 0 (a warm shutdown); a second SIGTERM or a SIGINT exits at
//! once with 130. `--no-warm-shutdown` keeps the default disposition, so SIGTERM kills it mid-task.
//!
//! A payload that is a number is the task's duration in milliseconds; otherwise `--task-ms`.
//!
//! With `--stdin-task` it is a task-mode command instead (`qsupervisor --task -- qscaler-test-worker
//! --stdin-task`): it reads one payload from stdin, records its start and end the same way, and exits 0.
//! Real containers have no redis-cli, so this is how a task marks itself there.
//!
//! Like a real worker, it rides out a Redis restart: every command is retried (reconnecting) for up
//! to a minute, so a task it took still gets its end event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use qscaler_crds::names::env;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A test queue worker: BRPOP, record start/end events, warm shutdown on SIGTERM"
)]
struct Args {
    /// Redis URL; without it, QSCALER_REDIS_HOST / QSCALER_REDIS_PORT / QSCALER_REDIS_DB /
    /// QSCALER_REDIS_PASSWORD are used.
    #[arg(long, env = "QSCALER_REDIS_URL")]
    redis_url: Option<String>,
    /// The list to consume (producers LPUSH, this worker takes from the right).
    #[arg(long, env = env::QUEUE)]
    queue: String,
    /// The list events are RPUSHed to (default: <queue>:events).
    #[arg(long)]
    events: Option<String>,
    /// How long a task takes when its payload is not a number of milliseconds.
    #[arg(long, default_value_t = 500)]
    task_ms: u64,
    /// Do not handle SIGTERM (the default disposition kills the worker mid-task).
    #[arg(long)]
    no_warm_shutdown: bool,
    /// Run the one task given on stdin (task mode), then exit.
    #[arg(long)]
    stdin_task: bool,
}

fn redis_url(a: &Args) -> Result<String> {
    if let Some(u) = &a.redis_url {
        return Ok(u.clone());
    }
    let host = std::env::var(env::REDIS_HOST)
        .with_context(|| format!("--redis-url or {} needed", env::REDIS_HOST))?;
    let port = std::env::var(env::REDIS_PORT).unwrap_or_else(|_| "6379".into());
    let db = std::env::var(env::REDIS_DB).unwrap_or_else(|_| "0".into());
    let auth = match std::env::var(env::REDIS_PASSWORD) {
        Ok(p) if !p.is_empty() => format!(":{p}@"),
        _ => String::new(),
    };
    Ok(format!("redis://{auth}{host}:{port}/{db}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let pod = std::env::var(env::POD_NAME).unwrap_or_else(|_| "local".into());
    let events = args
        .events
        .clone()
        .unwrap_or_else(|| format!("{}:events", args.queue));
    let client = redis::Client::open(redis_url(&args)?)?;
    let cfg = ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(5)));
    let mut conn = ConnectionManager::new_with_config(client, cfg).await?;

    if args.stdin_task {
        let mut payload = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut payload).context("stdin")?;
        return run_task(&mut conn, &events, payload.trim(), &pod, args.task_ms).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    if !args.no_warm_shutdown {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {
                        if stop.swap(true, Ordering::SeqCst) {
                            eprintln!("test-worker: second SIGTERM: cold shutdown");
                            std::process::exit(130);
                        }
                        eprintln!("test-worker: SIGTERM: finishing the current task, then exiting");
                    }
                    _ = int.recv() => {
                        eprintln!("test-worker: SIGINT: cold shutdown");
                        std::process::exit(130);
                    }
                }
            }
        });
    }

    eprintln!(
        "test-worker {pod}: consuming {:?}, events to {events:?}",
        args.queue
    );
    while !stop.load(Ordering::SeqCst) {
        let popped: Option<(String, Vec<u8>)> =
            retried(&mut conn, redis::cmd("BRPOP").arg(&args.queue).arg(1))
                .await
                .context("BRPOP")?;
        let Some((_, payload)) = popped else { continue };
        let payload = String::from_utf8_lossy(&payload).into_owned();
        run_task(&mut conn, &events, &payload, &pod, args.task_ms).await?;
    }
    eprintln!("test-worker: warm shutdown complete");
    Ok(())
}

/// One task: `start` event, the work (a numeric payload is its duration in ms), `end` event.
async fn run_task(
    conn: &mut ConnectionManager,
    events: &str,
    payload: &str,
    pod: &str,
    default_ms: u64,
) -> Result<()> {
    let ms = payload.trim().parse::<u64>().unwrap_or(default_ms);
    let _: () = retried(
        conn,
        redis::cmd("RPUSH")
            .arg(events)
            .arg(format!("start {payload} {pod}")),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let _: () = retried(
        conn,
        redis::cmd("RPUSH")
            .arg(events)
            .arg(format!("end {payload} {pod}")),
    )
    .await?;
    eprintln!("test-worker: task {payload:?} done");
    Ok(())
}

/// Runs `cmd`, retrying every 250 ms for up to a minute while Redis is unreachable.
async fn retried<T: redis::FromRedisValue>(
    conn: &mut ConnectionManager,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    let mut attempts = 0;
    loop {
        match cmd.query_async(conn).await {
            Err(e)
                if attempts < 240
                    && (e.is_io_error() || e.is_connection_dropped() || e.is_timeout()) =>
            {
                attempts += 1;
                if attempts == 1 {
                    eprintln!("test-worker: redis: {e}; retrying");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}
