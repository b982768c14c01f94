//! Throwaway TLS material for tests against a TLS-only redis-server: a fresh CA and a server
//! certificate it signs, made with the `openssl` CLI (valid one day; nothing is kept between runs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files of a test CA and the server certificate it signed (for 127.0.0.1 and localhost).
pub struct TestCa {
    /// The CA certificate (PEM), what clients trust.
    pub ca: PathBuf,
    /// The same CA certificate, as text.
    pub ca_pem: String,
    /// The server's certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// Makes the CA and the server certificate in `dir`; panics with openssl's words on failure.
    pub fn make(dir: &Path) -> TestCa {
        let openssl = |args: &str| {
            let out = Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(dir)
                .output()
                .expect("openssl (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(&format!(
            "req -x509 {ec} -keyout ca.key -out ca.pem -days 1 -subj /CN=qscaler-test-CA \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ));
        openssl(&format!(
            "req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1"
        ));
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("writing server.ext");
        openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
             -extfile server.ext -out server.pem",
        );
        TestCa {
            ca_pem: std::fs::read_to_string(dir.join("ca.pem")).expect("reading ca.pem"),
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}
