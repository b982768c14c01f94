//! The operations endpoints, on two ports as controller-runtime and KEDA have them: metrics
//! (`/metrics`, OpenMetrics text; default :8080) and probes (`/healthz` and `/livez`: the process
//! serves; `/readyz`: startup checks passed and, when leading, the caches are synced; default :8081).
//!
//! hyper's HTTP/1 server, because what a hand-written one got wrong is exactly what it does: a client
//! that sends no complete header within [`HEADER_READ_TIMEOUT`] is cut, and no connection lives
//! longer than [`REQUEST_TIMEOUT`] (one request per connection), so a silent or slow client holds a
//! task for seconds, not for ever. An accept error (out of file descriptors) waits a jittered,
//! growing delay instead of spinning.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::metrics::{Metrics, CONTENT_TYPE};

/// A client must have sent its request line and headers within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection (one request and its response) is closed after this, whatever state it is in.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which of the two listeners a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Metrics,
    Probes,
}

/// The addresses actually bound (port 0 picks a free one).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub metrics: SocketAddr,
    pub probes: SocketAddr,
}

/// Binds both addresses and serves until the returned task is aborted.
pub async fn serve(
    metrics_addr: SocketAddr,
    probe_addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> std::io::Result<(Bound, JoinHandle<()>)> {
    let metrics_listener = TcpListener::bind(metrics_addr).await?;
    let probe_listener = TcpListener::bind(probe_addr).await?;
    let bound = Bound {
        metrics: metrics_listener.local_addr()?,
        probes: probe_listener.local_addr()?,
    };
    let state = Arc::new(State { metrics, ready });
    let task = tokio::spawn({
        let state = state.clone();
        async move {
            let m = listen(metrics_listener, Port::Metrics, state.clone());
            let p = listen(probe_listener, Port::Probes, state);
            futures::future::join(m, p).await;
        }
    });
    Ok((bound, task))
}

struct State {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn listen(listener: TcpListener, port: Port, state: Arc<State>) {
    accept_loop(
        || async { listener.accept().await.map(|(s, _)| s) },
        |stream| {
            tokio::spawn(connection(stream, port, state.clone()));
        },
    )
    .await
}

/// The delays after accept errors in a row: 10 ms doubling to 1 s, jittered.
fn accept_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Accepts for ever; after an error waits the next [`accept_backoff`] delay (reset by a success).
async fn accept_loop<S, A, F>(mut accept: A, mut handle: impl FnMut(S))
where
    A: FnMut() -> F,
    F: Future<Output = std::io::Result<S>>,
{
    let mut delays = accept_backoff();
    let mut failures: u32 = 0;
    loop {
        match accept().await {
            Ok(stream) => {
                if failures > 0 {
                    delays = accept_backoff();
                    failures = 0;
                }
                handle(stream);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = delays.next().unwrap_or(Duration::from_secs(1));
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error = %e, failures, ?delay, "operations endpoint: accept failed");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Serves one connection: one request, under both timeouts.
async fn connection(stream: TcpStream, port: Port, state: Arc<State>) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(respond(port, &req, &state)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(false);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(REQUEST_TIMEOUT, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "operations endpoint: connection ended"),
        Err(_) => tracing::debug!("operations endpoint: connection cut after the request timeout"),
    }
}

fn respond(port: Port, req: &Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let (code, ctype, body) = route(
        port,
        req.method().as_str(),
        req.uri().path(),
        &state.metrics,
        state.ready.load(Ordering::Relaxed),
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::OK);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    resp
}

/// The response (status, content type, body) to a request's method and path on `port`.
pub fn route(
    port: Port,
    method: &str,
    path: &str,
    metrics: &Metrics,
    ready: bool,
) -> (u16, &'static str, String) {
    let path = path.split('?').next().unwrap_or(path);
    if method != "GET" && method != "HEAD" {
        return (405, "text/plain", "method not allowed\n".into());
    }
    match (port, path) {
        (Port::Metrics, "/metrics") => (200, CONTENT_TYPE, metrics.render()),
        (Port::Probes, "/healthz" | "/livez") => (200, "text/plain", "ok\n".into()),
        (Port::Probes, "/readyz") if ready => (200, "text/plain", "ok\n".into()),
        (Port::Probes, "/readyz") => (503, "text/plain", "not ready\n".into()),
        _ => (404, "text/plain", "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn routes() {
        let m = Metrics::default();
        m.set("qscaler_queue_depth", &[], 1.0);
        let r = |port, method, path, ready| route(port, method, path, &m, ready).0;
        assert_eq!(r(Port::Probes, "GET", "/healthz", false), 200);
        assert_eq!(r(Port::Probes, "GET", "/livez", false), 200);
        assert_eq!(r(Port::Probes, "GET", "/readyz", false), 503);
        assert_eq!(r(Port::Probes, "GET", "/readyz", true), 200);
        assert_eq!(r(Port::Metrics, "GET", "/metrics?x=1", true), 200);
        assert!(route(Port::Metrics, "GET", "/metrics", &m, true)
            .2
            .contains("# TYPE qscaler_queue_depth gauge"));
        // Each port serves its own paths only.
        assert_eq!(r(Port::Probes, "GET", "/metrics", true), 404);
        assert_eq!(r(Port::Metrics, "GET", "/readyz", true), 404);
        assert_eq!(r(Port::Metrics, "GET", "/nope", true), 404);
        assert_eq!(r(Port::Metrics, "POST", "/metrics", true), 405);
    }

    async fn start() -> (Bound, JoinHandle<()>) {
        serve(
            "127.0.0.1:0".parse().expect("addr"),
            "127.0.0.1:0".parse().expect("addr"),
            Arc::new(Metrics::default()),
            Arc::new(AtomicBool::new(true)),
        )
        .await
        .expect("binds")
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
            .await
            .expect("the response within 10 s")
            .expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_probes_on_their_ports() {
        let (bound, task) = start().await;
        let out = get(bound.probes, "/readyz").await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("ok\n"), "{out}");
        let out = get(bound.metrics, "/metrics").await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("application/openmetrics-text"), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
        assert!(get(bound.metrics, "/healthz")
            .await
            .starts_with("HTTP/1.1 404"));
        task.abort();
    }

    /// A client that connects and says nothing is cut after the header-read timeout, and meanwhile
    /// another client is served.
    #[tokio::test]
    async fn a_silent_connection_is_cut_and_others_are_served() {
        let (bound, task) = start().await;
        let mut silent = TcpStream::connect(bound.probes).await.expect("connect");
        let mut half = TcpStream::connect(bound.probes).await.expect("connect");
        half.write_all(b"GET /readyz HTTP/1.1\r\nHo")
            .await
            .expect("write");
        let started = std::time::Instant::now();
        let out = get(bound.probes, "/healthz").await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(started.elapsed() < HEADER_READ_TIMEOUT, "served at once");
        for s in [&mut silent, &mut half] {
            let mut buf = Vec::new();
            let read = tokio::time::timeout(
                HEADER_READ_TIMEOUT + Duration::from_secs(5),
                s.read_to_end(&mut buf),
            )
            .await;
            assert!(read.is_ok(), "not cut within the header-read timeout");
            assert!(
                started.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_millis(100),
                "cut too early: {:?}",
                started.elapsed()
            );
        }
        task.abort();
    }

    /// Accept errors in a row wait a growing delay: in 2 s (virtual) a handful of attempts, not the
    /// millions of a loop that retries at once.
    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = attempts.clone();
        let accept = move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
                Err::<(), _>(std::io::Error::other("too many open files"))
            }
        };
        let looping = tokio::spawn(accept_loop(accept, |_: ()| {}));
        tokio::time::sleep(Duration::from_secs(2)).await;
        looping.abort();
        let n = attempts.load(Ordering::Relaxed);
        assert!((3..=12).contains(&n), "{n} accept attempts in 2 s");
    }

    #[test]
    fn the_accept_backoff_grows_to_a_second_with_jitter() {
        let d: Vec<Duration> = accept_backoff().take(12).collect();
        assert!(d[0] >= Duration::from_millis(10) && d[0] <= Duration::from_millis(20));
        assert!(d[11] >= Duration::from_secs(1) && d[11] <= Duration::from_secs(2));
        assert!(d.windows(2).filter(|w| w[1] >= w[0]).count() >= 6);
    }
}
