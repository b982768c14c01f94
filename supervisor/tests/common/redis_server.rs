//! A real redis-server of a test's own, on a free loopback port, with its data in the test's
//! scratch directory (append-only, fsync always: a restart loses nothing acknowledged).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{read, scratch, wait_for, Guard};

const T: Duration = Duration::from_secs(30);

pub struct Redis {
    pub port: u16,
    /// The test's scratch directory: Redis keeps its data here, the tests their files.
    pub dir: PathBuf,
    server: Option<Guard>,
}

impl Redis {
    pub fn start(name: &str) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            port,
            dir: scratch(name),
            server: None,
        };
        r.restart();
        r
    }

    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.server = Some(Guard(child));
        wait_for(T, "redis-server to answer", || {
            let mut c = self.client().get_connection().ok()?;
            redis::cmd("PING").query::<String>(&mut c).ok()
        });
    }

    pub fn kill(&mut self) {
        if let Some(mut g) = self.server.take() {
            g.0.kill().unwrap();
            g.0.wait().unwrap();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }
}

/// The lines of a file the tests' scripts write.
pub fn lines(path: &Path) -> Vec<String> {
    read(path).lines().map(str::to_owned).collect()
}
