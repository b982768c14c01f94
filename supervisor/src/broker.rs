//! The Redis connection of task mode: settings from the environment (the password never printed),
//! and connections that a caller re-opens with backoff after any error.

use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
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

impl Broker {
    /// From `--redis-url` / `QSCALER_REDIS_URL`, or else the `QSCALER_REDIS_*` variables with the
    /// password read from `password` (the secretKeyRef-injected variable).
    pub fn from_options(o: &Options, password: Option<String>) -> Result<Broker> {
        if let Some(url) = o.redis_url.as_deref() {
            let client = Client::open(url).map_err(|source| Error::Redis {
                doing: "parsing the Redis URL",
                source,
            })?;
            return Ok(Broker {
                client,
                shown: redact_url(url),
            });
        }
        if o.redis_tls {
            return Err(Error::Config(
                "QSCALER_REDIS_TLS is set but this build of qsupervisor has no TLS support for Redis".into(),
            ));
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
        let info = ConnectionAddr::Tcp(host.clone(), o.redis_port)
            .into_connection_info()
            .map_err(|source| Error::Redis {
                doing: "building the Redis address",
                source,
            })?
            .set_redis_settings(redis);
        let client = Client::open(info).map_err(|source| Error::Redis {
            doing: "configuring the Redis client",
            source,
        })?;
        let user = o
            .redis_username
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        Ok(Broker {
            client,
            shown: format!("redis://{user}{host}:{}/{}", o.redis_port, o.redis_db),
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
}
