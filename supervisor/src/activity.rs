//! The worker's optional idle/busy channel: a unix datagram socket; each datagram is `idle` or
//! `busy` (surrounding whitespace ignored). In Python:
//! `socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"busy", os.environ["QSCALER_ACTIVITY_SOCKET"])`.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

use tokio::sync::watch;
use tracing::{debug, info, warn};

/// What the worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    Idle,
    Busy,
}

impl Activity {
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Idle => "idle",
            Activity::Busy => "busy",
        }
    }
}

/// Parses one datagram. Never panics.
pub fn parse(msg: &[u8]) -> Option<Activity> {
    let text = std::str::from_utf8(msg).ok()?.trim();
    if text.eq_ignore_ascii_case("idle") {
        Some(Activity::Idle)
    } else if text.eq_ignore_ascii_case("busy") {
        Some(Activity::Busy)
    } else {
        None
    }
}

/// Binds the socket (replacing a stale one from an earlier run of the container).
pub fn bind(path: &Path) -> std::io::Result<UnixDatagram> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let sock = UnixDatagram::bind(path)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Publishes each valid datagram into `tx`.
pub async fn listen(sock: UnixDatagram, tx: watch::Sender<Option<Activity>>) {
    let sock = match tokio::net::UnixDatagram::from_std(sock) {
        Ok(s) => s,
        Err(e) => {
            warn!("activity socket unusable: {e}");
            return;
        }
    };
    let mut buf = [0u8; 64];
    loop {
        match sock.recv(&mut buf).await {
            Ok(n) => match parse(&buf[..n]) {
                Some(a) => {
                    if tx.send_replace(Some(a)) != Some(a) {
                        info!("worker activity: {}", a.as_str());
                    }
                }
                None => debug!(
                    "ignoring activity message {:?}",
                    String::from_utf8_lossy(&buf[..n])
                ),
            },
            Err(e) => {
                warn!("activity socket: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages() {
        assert_eq!(parse(b"idle"), Some(Activity::Idle));
        assert_eq!(parse(b"busy\n"), Some(Activity::Busy));
        assert_eq!(parse(b" BUSY "), Some(Activity::Busy));
        for bad in [&b""[..], b"idl", b"idle busy", b"\xff\xfe", b"0"] {
            assert_eq!(parse(bad), None);
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse(&b);
        }
    }
}
