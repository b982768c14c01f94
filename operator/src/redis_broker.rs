//! The Redis broker: one multiplexed connection per ScalerConfig, re-established on the next call
//! after any error, with connect and response timeouts so a dead broker never stalls the poller.
//!
//! Depth of a queue = `LLEN queue`; in flight = `LLEN` of each pod's processing list
//! ([`qscaler_crds::names::keys::processing`]); all queues of a ScalerConfig go in one pipeline.

use std::time::Duration;

use qscaler_crds::names::keys;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
    TlsCertificates,
};

use crate::broker::{Broker, BrokerError, Depth, QueueError, QueueQuery, Returned};

/// Where and how to connect. The password and the CA bundle are resolved (from Secrets or inline)
/// by the caller. Equality covers every field, so a rotated password or CA restarts the poller.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisParams {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: bool,
    pub tls_insecure: bool,
    /// PEM CA bundle that verifies the server (TLS only); `None`: the system roots.
    pub tls_ca: Option<Vec<u8>>,
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
            .field("tls_insecure", &self.tls_insecure)
            .field("tls_ca", &self.tls_ca.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RedisParams {
    /// `redis://host:port/db` or `rediss://...`, without credentials (for messages).
    pub fn display_url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{}:{}/{}", self.host, self.port, self.db)
    }

    /// The client for these parameters: plain TCP; TLS verified with `tls_ca`, or with the system
    /// roots when none is given; or TLS without verification (`tls_insecure`). No I/O happens here.
    pub fn client(&self) -> redis::RedisResult<Client> {
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: self.tls_insecure,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let mut settings = RedisConnectionInfo::default().set_db(self.db);
        if let Some(u) = &self.username {
            settings = settings.set_username(u);
        }
        if let Some(pw) = &self.password {
            settings = settings.set_password(pw);
        }
        let info = addr.into_connection_info()?.set_redis_settings(settings);
        match (&self.tls_ca, self.tls) {
            (Some(pem), true) => Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            _ => Client::open(info),
        }
    }
}

/// Checks a CA bundle before it is used: it must hold at least one PEM certificate, all of them
/// parseable. An empty trust store would otherwise surface later as an opaque "unknown issuer"
/// on every connection.
pub fn check_ca_pem(pem: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(pem);
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Client::build_with_tls(
        "rediss://localhost",
        TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        },
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
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
        let client = p.client().map_err(classify)?;
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

/// Returns the oldest task of a dead consumer's processing list (KEYS[1]) and counts the run it
/// lost in the retry hash (KEYS[3], as qsupervisor counts a failed run): to the queue's consuming
/// end (KEYS[2]) while the count is at most ARGV[1], else to the dead-letter list (KEYS[4]) with
/// its count cleared, as qsupervisor dead-letters. 0: nothing left, 1: requeued, 2: dead-lettered.
const RETURN_ONE: &str = r"
local item = redis.call('LINDEX', KEYS[1], 0)
if not item then return 0 end
local n = redis.call('HINCRBY', KEYS[3], item, 1)
if n > tonumber(ARGV[1]) then
  redis.call('LMOVE', KEYS[1], KEYS[4], 'LEFT', 'LEFT')
  redis.call('HDEL', KEYS[3], item)
  return 2
end
redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
return 1
";

/// A key of a queue that Redis refused to read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FailedKey {
    /// "queue key" or "in-flight list".
    role: &'static str,
    key: String,
    error: String,
}

/// The `LLEN` answers of a pipeline, in query order (each queue's own key, then each consumer's
/// processing list), folded into one depth per queue; the first key of a queue that failed makes
/// that queue's answer. Pure.
fn fold_lengths(
    queries: &[QueueQuery],
    lens: impl IntoIterator<Item = Result<u64, String>>,
) -> Vec<Result<Depth, FailedKey>> {
    let mut it = lens.into_iter();
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let mut failed = None;
        let mut note = |role: &'static str, key: String, r: Option<Result<u64, String>>| match r {
            Some(Ok(n)) => n,
            Some(Err(error)) => {
                failed.get_or_insert(FailedKey { role, key, error });
                0
            }
            None => 0,
        };
        let queued = note("queue key", q.queue.clone(), it.next());
        let mut in_flight = 0u64;
        for consumer in &q.consumers {
            let key = keys::processing(&q.queue, consumer);
            in_flight = in_flight.saturating_add(note("in-flight list", key, it.next()));
        }
        out.push(match failed {
            Some(f) => Err(f),
            None => Ok(Depth { queued, in_flight }),
        });
    }
    out
}

impl RedisBroker {
    /// A readable reason for a key that failed: what it holds when it is not a list.
    async fn explain(&mut self, failed: FailedKey) -> Result<QueueError, BrokerError> {
        if !failed.error.contains("WRONGTYPE") {
            return Ok(QueueError(format!(
                "{} {}: {}",
                failed.role, failed.key, failed.error
            )));
        }
        let key = failed.key.clone();
        let type_: String = self
            .with(async move |mut c| redis::cmd("TYPE").arg(&key).query_async(&mut c).await)
            .await?;
        Ok(QueueError::wrong_type(failed.role, &failed.key, &type_))
    }
}

impl Broker for RedisBroker {
    async fn ping(&mut self) -> Result<(), BrokerError> {
        self.with(async |mut c| redis::cmd("PING").query_async::<String>(&mut c).await)
            .await
            .map(|_| ())
    }

    async fn depths(
        &mut self,
        queries: &[QueueQuery],
    ) -> Result<Vec<Result<Depth, QueueError>>, BrokerError> {
        if queries.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        // One key's error (WRONGTYPE) is that key's answer, not the whole pipeline's.
        pipe.ignore_errors();
        for q in queries {
            pipe.cmd("LLEN").arg(&q.queue);
            for consumer in &q.consumers {
                pipe.cmd("LLEN").arg(keys::processing(&q.queue, consumer));
            }
        }
        let lens: Vec<redis::RedisResult<u64>> = self
            .with(async |mut c| pipe.query_async(&mut c).await)
            .await?;
        let folded = fold_lengths(
            queries,
            lens.into_iter().map(|r| r.map_err(|e| e.to_string())),
        );
        let mut out = Vec::with_capacity(folded.len());
        for r in folded {
            out.push(match r {
                Ok(d) => Ok(d),
                Err(failed) => Err(self.explain(failed).await?),
            });
        }
        Ok(out)
    }

    async fn return_in_flight(
        &mut self,
        queue: &str,
        consumer: &str,
        max_retries: u32,
    ) -> Result<Returned, BrokerError> {
        let list = keys::processing(queue, consumer);
        let (queue, retries, dead) = (
            queue.to_string(),
            keys::retries(queue),
            keys::dead_letter(queue),
        );
        self.with(async move |mut c| {
            let mut out = Returned::default();
            // One script run per task: atomic, so a crash half-way leaves every task in exactly one
            // list with its count. A returned task goes to the consuming end (workers BRPOP/BLMOVE
            // from the right) so it is the next one taken: it has waited longest.
            loop {
                let moved: i64 = redis::cmd("EVAL")
                    .arg(RETURN_ONE)
                    .arg(4)
                    .arg(&list)
                    .arg(&queue)
                    .arg(&retries)
                    .arg(&dead)
                    .arg(max_retries)
                    .query_async(&mut c)
                    .await?;
                match moved {
                    1 => out.requeued += 1,
                    2 => out.dead_lettered += 1,
                    _ => break,
                }
            }
            Ok(out)
        })
        .await
    }

    async fn in_flight_owners(
        &mut self,
        queue: &str,
        namespace: &str,
    ) -> Result<Vec<String>, BrokerError> {
        let prefix = keys::processing(queue, &keys::consumer(Some(namespace), ""));
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
    fn one_failed_key_fails_only_its_queue() {
        let q = |name: &str, consumers: &[&str]| QueueQuery {
            queue: name.into(),
            consumers: consumers.iter().map(|c| c.to_string()).collect(),
        };
        let queries = [
            q("a", &["ns/a-1", "ns/a-2"]),
            q("bad", &["ns/b-1"]),
            q("c", &[]),
        ];
        let wrong = || Err("WRONGTYPE Operation against a key".to_string());
        let folded = fold_lengths(&queries, [Ok(3), Ok(1), Ok(2), wrong(), Ok(5), Ok(7)]);
        assert_eq!(
            folded[0],
            Ok(Depth {
                queued: 3,
                in_flight: 3
            })
        );
        assert_eq!(
            folded[1].as_ref().map_err(|f| (f.role, f.key.as_str())),
            Err(("queue key", "bad"))
        );
        assert_eq!(
            folded[2],
            Ok(Depth {
                queued: 7,
                in_flight: 0
            })
        );
        // A processing list of the wrong type is named as such.
        let folded = fold_lengths(&queries[..1], [Ok(3), wrong(), Ok(1)]);
        assert_eq!(
            folded[0].as_ref().map_err(|f| (f.role, f.key.as_str())),
            Err(("in-flight list", "a:processing:ns/a-1"))
        );
        // Fewer answers than keys (cannot happen with Redis) read as empty, not as a panic.
        assert_eq!(fold_lengths(&queries[2..], []), vec![Ok(Depth::default())]);
    }

    #[test]
    fn glob_escape_makes_names_literal() {
        assert_eq!(glob_escape("jobs"), "jobs");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    /// A throwaway self-signed CA certificate (public part only; its key was discarded).
    pub(crate) const TEST_CA: &str = include_str!("../../tests/data/test-ca.pem");

    fn params(tls: bool, insecure: bool, ca: Option<&str>) -> RedisParams {
        RedisParams {
            host: "h".into(),
            port: 1,
            db: 0,
            username: None,
            password: Some("hunter2".into()),
            tls,
            tls_insecure: insecure,
            tls_ca: ca.map(|c| c.as_bytes().to_vec()),
        }
    }

    #[test]
    fn debug_never_shows_the_password_or_the_ca() {
        let p = params(true, false, Some(TEST_CA));
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("MIIB"), "{shown}");
        assert_eq!(p.display_url(), "rediss://h:1/0");
        assert_eq!(params(false, false, None).display_url(), "redis://h:1/0");
    }

    #[test]
    fn a_rotated_ca_makes_different_params() {
        // The controller restarts the poller when the params differ.
        let a = params(true, false, Some(TEST_CA));
        assert_eq!(a, params(true, false, Some(TEST_CA)));
        assert_ne!(a, params(true, false, Some("other")));
        assert_ne!(a, params(true, false, None));
    }

    #[test]
    fn clients_for_plain_tls_with_ca_system_roots_and_insecure() {
        let addr = |p: &RedisParams| p.client().unwrap().get_connection_info().addr().clone();
        assert!(matches!(addr(&params(false, false, None)), ConnectionAddr::Tcp(h, 1) if h == "h"));
        // A CA given: the client carries its own trust store.
        assert!(matches!(
            addr(&params(true, false, Some(TEST_CA))),
            ConnectionAddr::TcpTls {
                insecure: false,
                tls_params: Some(_),
                ..
            }
        ));
        // No CA: the system roots (chosen when connecting).
        assert!(matches!(
            addr(&params(true, false, None)),
            ConnectionAddr::TcpTls {
                insecure: false,
                tls_params: None,
                ..
            }
        ));
        assert!(matches!(
            addr(&params(true, true, None)),
            ConnectionAddr::TcpTls { insecure: true, .. }
        ));
        // A CA on a plain connection is not used (validation refuses that spec anyway).
        assert!(matches!(
            addr(&params(false, false, Some(TEST_CA))),
            ConnectionAddr::Tcp(..)
        ));
    }

    #[test]
    fn ca_bundles_are_checked() {
        assert_eq!(check_ca_pem(TEST_CA.as_bytes()), Ok(()));
        let two = format!("{TEST_CA}{TEST_CA}");
        assert_eq!(check_ca_pem(two.as_bytes()), Ok(()));
        assert!(check_ca_pem(b"").is_err());
        assert!(check_ca_pem(b"not a certificate").is_err());
        let broken = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(check_ca_pem(broken.as_bytes()).is_err());
    }
}
