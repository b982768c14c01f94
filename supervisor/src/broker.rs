//! The Redis connection of task mode: qsupervisor's options (or `--redis-url`) and the password
//! from its secretKeyRef-injected variable → [`qscaler_queue`]'s parameters and connector, which
//! the operator uses too. TLS as the operator does it: the server verified with the ScalerConfig's
//! CA (injected from its Secret), else the system roots, or not at all (`insecureSkipVerify`).

use std::fmt;
use std::time::Duration;

use qscaler_crds::names::env;
use qscaler_queue::{
    Conn, Connector, Node, ParamsError, RedisParams, SentinelParams, Timeouts, Topology,
};

use crate::cli::Options;
use crate::{Error, Result};

/// Where the broker is. `Debug`/`Display` never show the password.
#[derive(Clone)]
pub struct Broker(Connector);

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Says which option or variable a refusal is about.
fn refused(e: ParamsError, from_url: bool) -> Error {
    let (ca, tls, insecure) = (env::REDIS_TLS_CA, env::REDIS_TLS, env::REDIS_TLS_INSECURE);
    Error::Config(match e {
        ParamsError::CaWithoutTls if from_url => {
            format!("{ca} is set but the Redis URL is not rediss://")
        }
        ParamsError::CaWithoutTls => {
            format!("{ca} is set but {tls} is not: a CA is only used with TLS")
        }
        ParamsError::CaAndInsecure => {
            format!("{ca} and {insecure} are both set: give a CA or skip verification, not both")
        }
        ParamsError::BadCa(why) => format!("{ca} {why}"),
        ParamsError::Url(_) | ParamsError::UnixSocket => format!("--redis-url: {e}"),
        ParamsError::Client(_) | ParamsError::ClusterDb(_) | ParamsError::NoNodes(_) => {
            e.to_string()
        }
    })
}

impl Broker {
    /// From `--redis-url` / `QSCALER_REDIS_URL`, or else the `QSCALER_REDIS_*` variables with the
    /// password read from `password` (the secretKeyRef-injected variable). TLS: verified with
    /// `--redis-tls-ca`, else the system roots, unless `--redis-tls-insecure`.
    pub fn from_options(o: &Options, password: Option<String>) -> Result<Broker> {
        Broker::with_sentinel_password(o, password, None)
    }

    /// [`Broker::from_options`], with the sentinels' password (their secretKeyRef-injected
    /// variable) for Redis Sentinel.
    pub fn with_sentinel_password(
        o: &Options,
        password: Option<String>,
        sentinel_password: Option<String>,
    ) -> Result<Broker> {
        let from_url = o.redis_url.is_some();
        let topology = topology(o, sentinel_password)?;
        let mut params = match o.redis_url.as_deref() {
            Some(url) => RedisParams::from_url(url).map_err(|e| refused(e, from_url))?,
            None => RedisParams {
                host: match (&topology, o.redis_host.clone().filter(|h| !h.is_empty())) {
                    (_, Some(h)) => h,
                    (Topology::Single, None) => {
                        return Err(Error::Config("no Redis host".into()));
                    }
                    (_, None) => String::new(),
                },
                port: o.redis_port,
                db: o.redis_db,
                username: o.redis_username.clone().filter(|u| !u.is_empty()),
                password: password.filter(|p| !p.is_empty()),
                tls: o.redis_tls,
                tls_insecure: o.redis_tls_insecure,
                tls_ca: None,
                topology,
            },
        };
        // An empty CA variable (an empty Secret key) means none.
        let ca = o.redis_tls_ca.as_deref().filter(|c| !c.trim().is_empty());
        // The flag is refused beside a CA even with a URL (which carries its own `#insecure`).
        if ca.is_some() && o.redis_tls_insecure {
            return Err(refused(ParamsError::CaAndInsecure, from_url));
        }
        params.tls_ca = ca.map(|c| c.as_bytes().to_vec());
        params.validate().map_err(|e| refused(e, from_url))?;
        Connector::new(&params)
            .map(Broker)
            .map_err(|e| refused(e, from_url))
    }

    /// A connection whose replies may take up to `response_timeout` (set it above any blocking
    /// command's own timeout).
    pub async fn connect(&self, response_timeout: Duration) -> redis::RedisResult<Conn> {
        self.0
            .connect(Timeouts {
                connect: Duration::from_secs(2),
                response: response_timeout,
            })
            .await
    }
}

/// Sentinels or cluster seeds from the options; one server when neither is given.
fn topology(o: &Options, sentinel_password: Option<String>) -> Result<Topology> {
    let nodes = |what: &str, list: &str| {
        Node::parse_list(list).map_err(|e| Error::Config(format!("{what}: {e}")))
    };
    let some = |s: &Option<String>| s.clone().filter(|v| !v.trim().is_empty());
    match (some(&o.redis_sentinels), some(&o.redis_cluster)) {
        (Some(_), Some(_)) => Err(Error::Config(format!(
            "{} and {} are both set: give one",
            env::REDIS_SENTINELS,
            env::REDIS_CLUSTER
        ))),
        (Some(list), None) => Ok(Topology::Sentinel(SentinelParams {
            nodes: nodes(env::REDIS_SENTINELS, &list)?,
            master: some(&o.redis_sentinel_master).ok_or_else(|| {
                Error::Config(format!(
                    "{} needs {}",
                    env::REDIS_SENTINELS,
                    env::REDIS_SENTINEL_MASTER
                ))
            })?,
            username: some(&o.redis_sentinel_username),
            password: sentinel_password.filter(|p| !p.is_empty()),
            tls: o.redis_sentinel_tls,
            tls_insecure: o.redis_sentinel_tls_insecure,
            tls_ca: some(&o.redis_sentinel_tls_ca).map(String::into_bytes),
        })),
        (None, Some(list)) => Ok(Topology::Cluster(nodes(env::REDIS_CLUSTER, &list)?)),
        (None, None) => Ok(Topology::Single),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use redis::ConnectionAddr;

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
        assert_eq!(b.to_string(), "redis://h:1/0");
        let o = Options::try_parse_from([
            "qsupervisor",
            "--redis-url",
            "rediss://u:hunter2@h:1/0",
            "--",
            "cat",
        ])
        .unwrap();
        let b = Broker::from_options(&o, None).unwrap();
        assert_eq!(
            b.to_string(),
            "rediss://u@h:1/0 (verified with the system roots)"
        );
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
        b.0.addr().unwrap().clone()
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
    fn sentinels_or_cluster_seeds_instead_of_a_host() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["qsupervisor"];
            argv.extend_from_slice(args);
            argv.extend(["--", "cat"]);
            let o = Options::try_parse_from(argv).unwrap();
            Broker::with_sentinel_password(&o, None, Some("s3cret".into()))
        };
        let b = parse(&[
            "--redis-sentinels",
            "s1:26379,s2:26379",
            "--redis-sentinel-master",
            "m",
        ])
        .unwrap();
        assert_eq!(b.to_string(), "redis+sentinel://s1:26379,s2:26379/m/0");
        assert!(!format!("{b:?}").contains("s3cret"));
        let b = parse(&["--redis-cluster", "c1:7000"]).unwrap();
        assert_eq!(b.to_string(), "redis+cluster://c1:7000/0");
        for (args, says) in [
            (
                &["--redis-sentinels", "s1:26379"][..],
                "QSCALER_REDIS_SENTINEL_MASTER",
            ),
            (&["--redis-cluster", "c1"], "host:port"),
            (
                &["--redis-cluster", "c1:7000", "--redis-db", "2"],
                "only database 0",
            ),
            (
                &["--redis-cluster", "c1:7000", "--redis-sentinels", "s:1"],
                "both set",
            ),
            (&[], "no Redis host"),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(says), "{args:?}: {e}");
        }
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
