//! The Redis broker: one multiplexed connection per ScalerConfig, re-established on the next call
//! after any error, with connect and response timeouts so a dead broker never stalls the poller.
//!
//! Depth of a queue = `LLEN queue`; in flight = `LLEN` of each pod's processing list
//! ([`qscaler_crds::names::keys::processing`]); all queues of a ScalerConfig go in one pipeline.

use std::time::Duration;

use qscaler_crds::names::keys;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::broker::{Broker, BrokerError, Depth, QueueQuery};

/// Where and how to connect. The password is resolved (from a Secret or inline) by the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisParams {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: bool,
    pub tls_insecure: bool,
}

impl std::fmt::Debug for RedisParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl RedisParams {
    /// `redis://host:port/db` or `rediss://...`, without credentials (for messages).
    pub fn display_url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{}:{}/{}", self.host, self.port, self.db)
    }
}

pub struct RedisBroker {
    params: RedisParams,
    timeout: Duration,
    conn: Option<MultiplexedConnection>,
}

fn classify(e: redis::RedisError) -> BrokerError {
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        BrokerError::Auth(text)
    } else if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
    {
        BrokerError::Unreachable(text)
    } else {
        BrokerError::Other(text)
    }
}

impl RedisBroker {
    pub fn new(params: RedisParams, timeout: Duration) -> Self {
        RedisBroker {
            params,
            timeout,
            conn: None,
        }
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, BrokerError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let p = &self.params;
        let addr = if p.tls {
            ConnectionAddr::TcpTls {
                host: p.host.clone(),
                port: p.port,
                insecure: p.tls_insecure,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(p.host.clone(), p.port)
        };
        let mut settings = RedisConnectionInfo::default().set_db(p.db);
        if let Some(u) = &p.username {
            settings = settings.set_username(u);
        }
        if let Some(pw) = &p.password {
            settings = settings.set_password(pw);
        }
        let info = addr
            .into_connection_info()
            .map_err(classify)?
            .set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(classify)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = tokio::time::timeout(
            self.timeout * 2,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| BrokerError::Unreachable(format!("connect to {} timed out", p.display_url())))?
        .map_err(classify)?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `f` on the connection; any error drops it so the next call reconnects.
    async fn with<T>(
        &mut self,
        f: impl AsyncFnOnce(MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Result<T, BrokerError> {
        let conn = self.connection().await?;
        match tokio::time::timeout(self.timeout * 2, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.conn = None;
                Err(classify(e))
            }
            Err(_) => {
                self.conn = None;
                Err(BrokerError::Unreachable(format!(
                    "{} did not answer in time",
                    self.params.display_url()
                )))
            }
        }
    }
}

impl Broker for RedisBroker {
    async fn ping(&mut self) -> Result<(), BrokerError> {
        self.with(async |mut c| redis::cmd("PING").query_async::<String>(&mut c).await)
            .await
            .map(|_| ())
    }

    async fn depths(&mut self, queries: &[QueueQuery]) -> Result<Vec<Depth>, BrokerError> {
        if queries.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for q in queries {
            pipe.cmd("LLEN").arg(&q.queue);
            for pod in &q.pods {
                pipe.cmd("LLEN").arg(keys::processing(&q.queue, pod));
            }
        }
        let lens: Vec<u64> = self
            .with(async |mut c| pipe.query_async(&mut c).await)
            .await?;
        let mut it = lens.into_iter();
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            let queued = it.next().unwrap_or(0);
            let in_flight = (&mut it).take(q.pods.len()).sum();
            out.push(Depth { queued, in_flight });
        }
        Ok(out)
    }

    async fn return_in_flight(&mut self, queue: &str, pod: &str) -> Result<u64, BrokerError> {
        let list = keys::processing(queue, pod);
        let queue = queue.to_string();
        self.with(async move |mut c| {
            let mut moved = 0u64;
            // One atomic LMOVE per task: a crash half-way leaves every task in exactly one list.
            // The returned task goes to the consuming end (workers BRPOP/BLMOVE from the right) so it
            // is the next one taken: it has waited longest.
            loop {
                let item: Option<Vec<u8>> = redis::cmd("LMOVE")
                    .arg(&list)
                    .arg(&queue)
                    .arg("LEFT")
                    .arg("RIGHT")
                    .query_async(&mut c)
                    .await?;
                if item.is_none() {
                    break;
                }
                moved += 1;
            }
            Ok(moved)
        })
        .await
    }

    async fn in_flight_owners(&mut self, queue: &str) -> Result<Vec<String>, BrokerError> {
        let prefix = keys::processing(queue, "");
        let pattern = format!("{}*", glob_escape(&prefix));
        let found: Vec<String> = self
            .with(async move |mut c| {
                let mut cursor: u64 = 0;
                let mut found = vec![];
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut c)
                        .await?;
                    found.extend(batch);
                    cursor = next;
                    if cursor == 0 {
                        break;
                    }
                }
                Ok(found)
            })
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .filter(|p| !p.is_empty())
            .collect())
    }
}

/// Escapes Redis glob characters so a queue name is matched literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escape_makes_names_literal() {
        assert_eq!(glob_escape("jobs"), "jobs");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let p = RedisParams {
            host: "h".into(),
            port: 1,
            db: 0,
            username: None,
            password: Some("hunter2".into()),
            tls: false,
            tls_insecure: false,
        };
        assert!(!format!("{p:?}").contains("hunter2"));
        assert_eq!(p.display_url(), "redis://h:1/0");
    }
}
