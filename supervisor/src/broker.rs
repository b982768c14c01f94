//! The Redis connection of task mode: settings from the environment (the password never printed),
//! and connections that a caller re-opens with backoff after any error. TLS as the operator does it:
//! the server verified with the ScalerConfig's CA (injected from its Secret), else the system
//! roots, or not at all when the ScalerConfig says `insecureSkipVerify`.

use std::fmt;
use std::time::Duration;

use qscaler_crds::names::env;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
    TlsCertificates,
};

use crate::cli::Options;
use crate::{Error, Result};

/// Where the broker is. `Debug`/`Display` never show the password.
#[derive(Clone)]
pub struct Broker {
    client: Client,
    shown: String,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// A URL with its password (and anything else between `//` and `@`) replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".into()
            };
            format!("{}{}{}", &url[..s + 3], masked, &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// How the server's certificate is checked, from `--redis-tls-ca` / `--redis-tls-insecure`.
fn tls_certificates(o: &Options) -> Result<Option<TlsCertificates>> {
    let Some(ca) = o.redis_tls_ca.as_deref().filter(|c| !c.trim().is_empty()) else {
        return Ok(None);
    };
    // Verify with this CA, or verify nothing: the operator's validation refuses both at once too.
    if o.redis_tls_insecure {
        return Err(Error::Config(format!(
            "{} and {} are both set: give a CA or skip verification, not both",
            env::REDIS_TLS_CA,
            env::REDIS_TLS_INSECURE
        )));
    }
    // An empty trust store would fail every handshake with an opaque "unknown issuer".
    if !ca.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::Config(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            env::REDIS_TLS_CA
        )));
    }
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.as_bytes().to_vec()),
    }))
}

/// A client for `info`, with the CA bundle when one is given (TLS addresses only).
fn client_for(info: impl IntoConnectionInfo, certs: Option<TlsCertificates>) -> Result<Client> {
    match certs {
        Some(certs) => Client::build_with_tls(info, certs).map_err(|source| Error::Redis {
            doing: "loading the TLS CA bundle (QSCALER_REDIS_TLS_CA)",
            source,
        }),
        None => Client::open(info).map_err(|source| Error::Redis {
            doing: "configuring the Redis client",
            source,
        }),
    }
}

impl Broker {
    /// From `--redis-url` / `QSCALER_REDIS_URL`, or else the `QSCALER_REDIS_*` variables with the
    /// password read from `password` (the secretKeyRef-injected variable). TLS: verified with
    /// `--redis-tls-ca`, else the system roots, unless `--redis-tls-insecure`.
    pub fn from_options(o: &Options, password: Option<String>) -> Result<Broker> {
        let certs = tls_certificates(o)?;
        let with_ca = certs.is_some();
        if let Some(url) = o.redis_url.as_deref() {
            let info = url.into_connection_info().map_err(|source| Error::Redis {
                doing: "parsing the Redis URL",
                source,
            })?;
            let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
            if with_ca && !tls {
                return Err(Error::Config(format!(
                    "{} is set but the Redis URL is not rediss://",
                    env::REDIS_TLS_CA
                )));
            }
            return Ok(Broker {
                client: client_for(info, certs)?,
                shown: redact_url(url),
            });
        }
        if with_ca && !o.redis_tls {
            return Err(Error::Config(format!(
                "{} is set but {} is not: a CA is only used with TLS",
                env::REDIS_TLS_CA,
                env::REDIS_TLS
            )));
        }
        let host = o
            .redis_host
            .clone()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::Config("no Redis host".into()))?;
        let mut redis = RedisConnectionInfo::default().set_db(o.redis_db);
        if let Some(u) = o.redis_username.as_deref().filter(|u| !u.is_empty()) {
            redis = redis.set_username(u);
        }
        if let Some(p) = password.as_deref().filter(|p| !p.is_empty()) {
            redis = redis.set_password(p);
        }
        let addr = if o.redis_tls {
            ConnectionAddr::TcpTls {
                host: host.clone(),
                port: o.redis_port,
                insecure: o.redis_tls_insecure,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.clone(), o.redis_port)
        };
        let info = addr
            .into_connection_info()
            .map_err(|source| Error::Redis {
                doing: "building the Redis address",
                source,
            })?
            .set_redis_settings(redis);
        let client = client_for(info, certs)?;
        let user = o
            .redis_username
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let scheme = if o.redis_tls { "rediss" } else { "redis" };
        let verify = match (o.redis_tls, o.redis_tls_insecure, with_ca) {
            (false, _, _) => "",
            (true, true, _) => " (certificate not verified)",
            (true, false, true) => " (verified with the given CA)",
            (true, false, false) => " (verified with the system roots)",
        };
        Ok(Broker {
            client,
            shown: format!(
                "{scheme}://{user}{host}:{}/{}{verify}",
                o.redis_port, o.redis_db
            ),
        })
    }

    /// A connection whose replies may take up to `response_timeout` (set it above any blocking
    /// command's own timeout).
    pub async fn connect(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(response_timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://u:secret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(redact_url("redis://:secret@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact_url("redis://secret@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:6379/2"), "redis://h:6379/2");
        assert_eq!(redact_url("rediss://u:p@ss@h"), "rediss://u:***@h");
        assert_eq!(redact_url("nonsense"), "nonsense");
    }

    #[test]
    fn the_password_is_never_shown() {
        let o = Options::try_parse_from([
            "qsupervisor",
            "--redis-host",
            "redis.example",
            "--redis-username",
            "worker",
            "--",
            "cat",
        ])
        .unwrap();
        let b = Broker::from_options(&o, Some("hunter2".into())).unwrap();
        assert_eq!(b.to_string(), "redis://worker@redis.example:6379/0");
        assert!(!format!("{b:?}").contains("hunter2"));
        let o = Options::try_parse_from([
            "qsupervisor",
            "--redis-url",
            "redis://:hunter2@h:1/0",
            "--",
            "cat",
        ])
        .unwrap();
        let b = Broker::from_options(&o, None).unwrap();
        assert!(!format!("{b} {b:?}").contains("hunter2"));
    }

    /// A throwaway self-signed CA certificate (public part only; its key was discarded).
    const TEST_CA: &str = include_str!("../../tests/data/test-ca.pem");

    fn broker(args: &[&str]) -> Result<Broker> {
        let mut argv = vec!["qsupervisor", "--redis-host", "r.example"];
        argv.extend_from_slice(args);
        argv.extend(["--", "cat"]);
        Broker::from_options(&Options::try_parse_from(argv).unwrap(), None)
    }

    fn addr(b: &Broker) -> ConnectionAddr {
        b.client.get_connection_info().addr().clone()
    }

    #[test]
    fn tls_with_a_ca_the_system_roots_or_no_verification() {
        let b = broker(&["--redis-tls", "--redis-tls-ca", TEST_CA]).unwrap();
        assert!(matches!(
            addr(&b),
            ConnectionAddr::TcpTls {
                insecure: false,
                tls_params: Some(_),
                ..
            }
        ));
        assert_eq!(
            b.to_string(),
            "rediss://r.example:6379/0 (verified with the given CA)"
        );
        assert!(!format!("{b:?}").contains("MIIB"));
        let b = broker(&["--redis-tls"]).unwrap();
        assert!(matches!(
            addr(&b),
            ConnectionAddr::TcpTls {
                insecure: false,
                tls_params: None,
                ..
            }
        ));
        assert!(b.to_string().ends_with("(verified with the system roots)"));
        let b = broker(&["--redis-tls", "--redis-tls-insecure"]).unwrap();
        assert!(matches!(
            addr(&b),
            ConnectionAddr::TcpTls { insecure: true, .. }
        ));
        assert!(b.to_string().ends_with("(certificate not verified)"));
        assert!(matches!(
            addr(&broker(&[]).unwrap()),
            ConnectionAddr::Tcp(..)
        ));
        // An empty CA variable (an empty Secret key) means none.
        let b = broker(&["--redis-tls", "--redis-tls-ca", ""]).unwrap();
        assert!(matches!(
            addr(&b),
            ConnectionAddr::TcpTls {
                tls_params: None,
                ..
            }
        ));
    }

    #[test]
    fn a_ca_on_a_rediss_url() {
        let b = broker(&["--redis-url", "rediss://h:1/0", "--redis-tls-ca", TEST_CA]).unwrap();
        assert!(matches!(
            addr(&b),
            ConnectionAddr::TcpTls {
                tls_params: Some(_),
                ..
            }
        ));
        let e = broker(&["--redis-url", "redis://h:1/0", "--redis-tls-ca", TEST_CA]).unwrap_err();
        assert!(e.to_string().contains("not rediss://"), "{e}");
    }

    #[test]
    fn contradictory_or_broken_tls_settings_are_refused() {
        let refused = |args: &[&str], says: &str| {
            let e = broker(args).unwrap_err().to_string();
            assert!(e.contains(says), "{args:?}: {e}");
        };
        refused(&["--redis-tls-ca", TEST_CA], "only used with TLS");
        refused(
            &[
                "--redis-tls",
                "--redis-tls-insecure",
                "--redis-tls-ca",
                TEST_CA,
            ],
            "not both",
        );
        refused(
            &["--redis-tls", "--redis-tls-ca", "hello"],
            "no PEM certificate",
        );
        refused(
            &[
                "--redis-tls",
                "--redis-tls-ca",
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
            ],
            "QSCALER_REDIS_TLS_CA",
        );
    }
}
