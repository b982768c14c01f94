//! A redis-server per test, on a free loopback port: what every test of this crate runs against.

#![allow(dead_code)] // each test binary uses its own part

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qscaler_queue::{Conn, Connector, RedisParams, Timeouts};

/// A redis-server without persistence, killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const T: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    response: Duration::from_secs(5),
};

impl Server {
    pub async fn start() -> (Server, Conn) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = server.connect().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return (server, c);
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn params(&self) -> RedisParams {
        RedisParams::from_url(&format!("redis://127.0.0.1:{}/0", self.port)).unwrap()
    }

    pub async fn connect(&self) -> redis::RedisResult<Conn> {
        Connector::new(&self.params()).unwrap().connect(T).await
    }
}
