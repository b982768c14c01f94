//! The operations endpoint: `/metrics` (Prometheus text), `/healthz` (the process serves), `/readyz`
//! (startup checks passed and, when leading, the caches are synced). A few lines over a TcpListener:
//! three GET routes do not need an HTTP framework.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// Binds `addr` (port 0 picks a free one) and serves until the task is dropped. Returns the bound
/// address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                let _ = handle(stream, &metrics, &ready).await;
            });
        }
    });
    Ok((bound, task))
}

/// The response to a request line's method and path.
pub fn route(
    method: &str,
    path: &str,
    metrics: &Metrics,
    ready: bool,
) -> (u16, &'static str, String) {
    let path = path.split('?').next().unwrap_or(path);
    match (method, path) {
        ("GET", "/metrics") => (200, "text/plain; version=0.0.4", metrics.render()),
        ("GET", "/healthz") | ("GET", "/livez") => (200, "text/plain", "ok\n".into()),
        ("GET", "/readyz") if ready => (200, "text/plain", "ok\n".into()),
        ("GET", "/readyz") => (503, "text/plain", "not ready\n".into()),
        ("GET", _) => (404, "text/plain", "not found\n".into()),
        _ => (405, "text/plain", "method not allowed\n".into()),
    }
}

async fn handle(
    mut stream: TcpStream,
    metrics: &Metrics,
    ready: &AtomicBool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    // Read until the end of the headers (or the buffer is full); the body is never needed.
    loop {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || len == buf.len() {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let (code, ctype, body) = route(method, path, metrics, ready.load(Ordering::Relaxed));
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let resp = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::default();
        assert_eq!(route("GET", "/healthz", &m, false).0, 200);
        assert_eq!(route("GET", "/readyz", &m, false).0, 503);
        assert_eq!(route("GET", "/readyz", &m, true).0, 200);
        assert_eq!(route("GET", "/metrics?x=1", &m, true).0, 200);
        assert!(route("GET", "/metrics", &m, true)
            .2
            .contains("# TYPE qscaler_queue_depth gauge"));
        assert_eq!(route("GET", "/nope", &m, true).0, 404);
        assert_eq!(route("POST", "/metrics", &m, true).0, 405);
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let (addr, task) = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Metrics::default()),
            Arc::new(AtomicBool::new(true)),
        )
        .await
        .unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("ok\n"));
        task.abort();
    }
}
