//! The Redis broker: one multiplexed connection per ScalerConfig (to one server, the primary
//! Sentinel names, or a Redis Cluster), re-established on the next call after any error, with
//! connect and response timeouts so a dead broker never stalls the poller. An answer that says the
//! topology is moving (a failover, a slot migration: [`unsettled`]) is the broker's error, never a
//! queue's reading: the poller keeps what it decided before and reads again after reconnecting.
//! The queue protocol itself (keys, depths, returning tasks, TLS) is [`qscaler_queue`]'s, shared
//! with qsupervisor; this file adapts it to the operator's [`Broker`] seam.

use std::time::Duration;

use qscaler_queue::depth::{self, FailedKey, Query};
use qscaler_queue::topology::{unsettled, unsettled_text};
use qscaler_queue::{stream_task, task, Conn, Connector, Node, TaskKeys, Timeouts, Topology};
use redis::aio::MultiplexedConnection;
use redis::Value;

use crate::broker::{Broker, BrokerError, Depth, QueueError, QueueQuery, Returned, TaskTally};

pub use qscaler_queue::{check_ca_pem, RedisParams};

pub struct RedisBroker {
    params: RedisParams,
    timeout: Duration,
    conn: Option<Conn>,
    /// Through Sentinel: the primary `conn` reaches, and a connection to a sentinel that names
    /// the primary now.
    primary: Option<Node>,
    sentinel: Option<MultiplexedConnection>,
}

fn classify(e: redis::RedisError) -> BrokerError {
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        BrokerError::Auth(text)
    } else if unsettled(&e) {
        BrokerError::Unreachable(format!("topology unsettled (reconnecting): {text}"))
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
            primary: None,
            sentinel: None,
        }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.timeout,
            response: self.timeout,
        }
    }

    /// Through Sentinel: an error when the sentinels name another primary than the one the
    /// connection reaches (after a failover the old primary takes writes, soon rolled back, until
    /// the sentinels reconfigure it); the connection is dropped so the next tick reaches the new
    /// one. A sentinel that does not answer says nothing: the data connection decides.
    async fn check_primary(&mut self) -> Result<(), BrokerError> {
        let Some(primary) = self.primary.clone() else {
            return Ok(());
        };
        let connector =
            Connector::new(&self.params).map_err(|e| BrokerError::Other(e.to_string()))?;
        let (t, deadline, slot) = (self.timeouts(), self.timeout * 2, &mut self.sentinel);
        let named = async {
            let mut c = match slot.take() {
                Some(c) => c,
                None => match connector.sentinel(t).await? {
                    Some(c) => c,
                    None => return Ok(None),
                },
            };
            let named = connector.named_primary(&mut c).await?;
            *slot = Some(c);
            Ok::<_, redis::RedisError>(named)
        };
        match tokio::time::timeout(deadline, named).await {
            Ok(Ok(Some(named))) if named != primary => {
                self.conn = None;
                self.primary = None;
                Err(BrokerError::Unreachable(format!(
                    "topology unsettled (reconnecting): the sentinels name {named} as the primary, not {primary}"
                )))
            }
            _ => Ok(()),
        }
    }

    async fn connection(&mut self) -> Result<Conn, BrokerError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let connector =
            Connector::new(&self.params).map_err(|e| BrokerError::Other(e.to_string()))?;
        let timeouts = Timeouts {
            connect: self.timeout,
            response: self.timeout,
        };
        let (conn, primary) =
            tokio::time::timeout(self.timeout * 2, connector.connect_to_primary(timeouts))
                .await
                .map_err(|_| {
                    BrokerError::Unreachable(format!(
                        "connect to {} timed out",
                        self.params.display_url()
                    ))
                })?
                .map_err(classify)?;
        self.conn = Some(conn.clone());
        self.primary = primary;
        Ok(conn)
    }

    /// Runs `f` on the connection; any error drops it so the next call reconnects.
    async fn with<T>(
        &mut self,
        f: impl AsyncFnOnce(Conn) -> redis::RedisResult<T>,
    ) -> Result<T, BrokerError> {
        self.attempt(f).await.map_err(|failed| failed.error)
    }

    /// Runs a read-only `f` as [`Self::with`] does, but when a kept connection turns out closed
    /// since it was last used (a Redis restart), `f` is tried once more on a new one: the first
    /// read after a restart, often the one a push woke, is not lost to a dead socket.
    async fn read<T>(
        &mut self,
        f: impl AsyncFnOnce(Conn) -> redis::RedisResult<T> + Clone,
    ) -> Result<T, BrokerError> {
        let kept = self.conn.is_some();
        match self.attempt(f.clone()).await {
            Err(Failed { dropped: true, .. }) if kept => self.with(f).await,
            other => other.map_err(|failed| failed.error),
        }
    }

    async fn attempt<T>(
        &mut self,
        f: impl AsyncFnOnce(Conn) -> redis::RedisResult<T>,
    ) -> Result<T, Failed> {
        let conn = self.connection().await.map_err(|error| Failed {
            error,
            dropped: false,
        })?;
        match tokio::time::timeout(self.timeout * 2, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.conn = None;
                Err(Failed {
                    dropped: (e.is_connection_dropped() || e.is_io_error()) && !e.is_timeout(),
                    error: classify(e),
                })
            }
            Err(_) => {
                self.conn = None;
                Err(Failed {
                    error: BrokerError::Unreachable(format!(
                        "{} did not answer in time",
                        self.params.display_url()
                    )),
                    dropped: false,
                })
            }
        }
    }
}

/// How one try on the connection failed.
struct Failed {
    error: BrokerError,
    /// The socket was found closed (not a slow, refused or error answer).
    dropped: bool,
}

/// Every queue's depth in as few round trips as the topology allows: one pipeline on one server;
/// on a cluster, where a pipeline may only touch one slot, one pipeline per queue (its keys share
/// its hash tag), all sent at once.
async fn read_all(
    c: Conn,
    queries: &[Query<'_>],
    check_role: bool,
) -> redis::RedisResult<Vec<(Result<depth::Lengths, FailedKey>, Option<depth::Tally>)>> {
    if !c.is_cluster() {
        let (mut c, mut r) = (c.clone(), c);
        let role = async {
            if !check_role {
                return Ok(None);
            }
            redis::cmd("ROLE")
                .query_async::<Value>(&mut r)
                .await
                .map(Some)
        };
        let (read, role) = futures::join!(depth::read_timed(&mut c, queries), role);
        if let Some(role) = role? {
            if !is_primary(&role) {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                    "the server Sentinel named is no longer the primary",
                    format!("{role:?}"),
                )));
            }
        }
        return read;
    }
    let reads = queries.iter().map(|q| {
        let mut c = c.clone();
        async move { depth::read_timed(&mut c, std::slice::from_ref(q)).await }
    });
    let mut out = Vec::with_capacity(queries.len());
    for r in futures::future::join_all(reads).await {
        out.extend(r?);
    }
    Ok(out)
}

/// Whether a `ROLE` answer is a primary's (`master`, ...).
fn is_primary(role: &Value) -> bool {
    match role {
        Value::Array(items) => items
            .first()
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            .is_some_and(|r| r == "master"),
        _ => false,
    }
}

/// A readable reason for a key Redis refused to read: what it holds when it is not a list.
fn queue_error(f: FailedKey) -> QueueError {
    match f.holds {
        Some(type_) => QueueError::wrong_type(f.role.as_str(), &f.key, &type_, f.expects),
        None => QueueError(format!("{} {}: {}", f.role.as_str(), f.key, f.error)),
    }
}

impl Broker for RedisBroker {
    async fn ping(&mut self) -> Result<(), BrokerError> {
        self.read(async |mut c| redis::cmd("PING").query_async::<String>(&mut c).await)
            .await
            .map(|_| ())
    }

    async fn depths(
        &mut self,
        queries: &[QueueQuery],
    ) -> Result<Vec<Result<Depth, QueueError>>, BrokerError> {
        let queries: Vec<Query> = queries
            .iter()
            .map(|q| Query {
                queue: &q.queue,
                format: q.format,
                consumers: &q.consumers,
                group: q.group.as_deref(),
            })
            .collect();
        // Through Sentinel, a failover may leave the connection on a demoted primary, which still
        // answers reads: its role is checked on every tick.
        let check_role = matches!(self.params.topology, Topology::Sentinel(_));
        self.check_primary().await?;
        let read = self
            .read(async |c| read_all(c, &queries, check_role).await)
            .await?;
        // A key answered "moved", "loading", "read only"...: the topology is moving, and a
        // reading of the keys that did answer could be short. The whole tick is a broker error.
        if let Some(f) = read
            .iter()
            .filter_map(|(r, _)| r.as_ref().err())
            .find(|f| unsettled_text(&f.error))
        {
            self.conn = None;
            return Err(BrokerError::Unreachable(format!(
                "topology unsettled (reconnecting): {} {}: {}",
                f.role.as_str(),
                f.key,
                f.error
            )));
        }
        Ok(read
            .into_iter()
            .map(|(r, t)| {
                r.map(|l| Depth {
                    queued: l.queued,
                    in_flight: l.in_flight,
                    tally: t.map(|t| TaskTally {
                        tasks: t.tasks,
                        millis: t.millis,
                    }),
                    task_millis: None,
                    due_backlog: None,
                })
                .map_err(queue_error)
            })
            .collect())
    }

    async fn return_in_flight(
        &mut self,
        queue: &str,
        consumer: &str,
        max_retries: u32,
    ) -> Result<Returned, BrokerError> {
        let keys = TaskKeys::new(queue, consumer);
        // A stream queue's consumer holds pending entries, not a processing list.
        let r = self
            .with(async |mut c| {
                if stream_task::is_stream(&mut c, queue).await? {
                    stream_task::return_held(&mut c, queue, consumer, max_retries).await
                } else {
                    task::return_held(&mut c, &keys, max_retries).await
                }
            })
            .await?;
        Ok(Returned {
            requeued: r.requeued,
            dead_lettered: r.dead_lettered,
        })
    }

    async fn in_flight_owners(
        &mut self,
        queue: &str,
        namespace: &str,
    ) -> Result<Vec<String>, BrokerError> {
        self.with(async |mut c| depth::holders(&mut c, queue, namespace).await)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_redis::RedisServer;
    use qscaler_queue::depth::KeyRole;
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    /// A failover or a slot migration is an unreachable broker (the poller holds and reconnects),
    /// a refused login is a login problem, anything else a broker error: never a reading.
    #[test]
    fn topology_moves_are_an_unsettled_broker() {
        let server = |kind: ServerErrorKind, detail: &str| {
            RedisError::from((
                ErrorKind::Server(kind),
                "An error was signalled by the server",
                detail.to_string(),
            ))
        };
        for e in [
            server(ServerErrorKind::Moved, "3999 127.0.0.1:7001"),
            server(ServerErrorKind::Ask, "3999 127.0.0.1:7001"),
            server(
                ServerErrorKind::TryAgain,
                "Multiple keys request during rehashing",
            ),
            server(ServerErrorKind::ClusterDown, "The cluster is down"),
            server(ServerErrorKind::BusyLoading, "Redis is loading the dataset"),
            server(
                ServerErrorKind::ReadOnly,
                "You can't write against a read only replica.",
            ),
            server(ServerErrorKind::MasterDown, "Link with MASTER is down"),
        ] {
            let shown = e.to_string();
            match classify(e) {
                BrokerError::Unreachable(m) => assert!(m.contains("topology unsettled"), "{m}"),
                other => panic!("{shown}: {other:?}"),
            }
        }
        assert!(matches!(
            classify(server(ServerErrorKind::ResponseError, "unknown command")),
            BrokerError::Other(_)
        ));
        assert!(matches!(
            classify(RedisError::from((
                ErrorKind::AuthenticationFailed,
                "WRONGPASS invalid username-password pair"
            ))),
            BrokerError::Auth(_)
        ));
    }

    async fn push_tasks(server: &RedisServer, n: usize) {
        let mut c = server.conn().await.expect("a connection");
        let tasks: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
        let _: i64 = redis::cmd("RPUSH")
            .arg("q")
            .arg(&tasks)
            .query_async(&mut c)
            .await
            .expect("RPUSH");
    }

    /// The kept connection of a broker whose Redis restarted is closed: the first read after the
    /// restart reconnects and answers, rather than failing the tick (a push's wake-up would wait
    /// for the next poll). A Redis that is down is still an error.
    #[tokio::test]
    async fn the_first_read_after_a_redis_restart_answers() {
        let server = RedisServer::start().await;
        let port = server.port;
        push_tasks(&server, 3).await;
        let params = RedisParams::from_url(&server.url()).unwrap();
        let mut broker = RedisBroker::new(params, Duration::from_secs(2));
        let queries = [QueueQuery {
            queue: "q".into(),
            format: Default::default(),
            consumers: vec![],
            group: None,
        }];
        let queued = |r: Result<Vec<Result<Depth, QueueError>>, BrokerError>| {
            r.map(|d| d[0].as_ref().map(|d| d.queued).ok())
        };
        assert_eq!(queued(broker.depths(&queries).await).ok(), Some(Some(3)));

        drop(server);
        let server = RedisServer::start_on(port).await;
        push_tasks(&server, 2).await;
        assert_eq!(queued(broker.depths(&queries).await).ok(), Some(Some(2)));
        broker.ping().await.expect("a ping on the new connection");

        drop(server);
        assert!(matches!(
            broker.depths(&queries).await,
            Err(BrokerError::Unreachable(_))
        ));
        assert!(matches!(
            broker.ping().await,
            Err(BrokerError::Unreachable(_))
        ));
    }

    #[test]
    fn only_a_primary_role_is_a_primary() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert!(is_primary(&Value::Array(vec![
            bulk("master"),
            Value::Int(42),
            Value::Array(vec![])
        ])));
        assert!(!is_primary(&Value::Array(vec![
            bulk("slave"),
            bulk("127.0.0.1"),
            Value::Int(6379),
            bulk("connected"),
            Value::Int(42)
        ])));
        assert!(!is_primary(&Value::Array(vec![])));
        assert!(!is_primary(&Value::Nil));
    }

    #[test]
    fn a_failed_key_reads_as_its_queues_error() {
        let failed = |holds: Option<&str>| FailedKey {
            role: KeyRole::InFlight,
            key: "q:processing:ns/p".into(),
            error: "WRONGTYPE Operation against a key".into(),
            holds: holds.map(str::to_owned),
            expects: "list",
        };
        assert_eq!(
            queue_error(failed(Some("zset"))),
            QueueError::wrong_type("in-flight list", "q:processing:ns/p", "zset", "list")
        );
        let e = queue_error(failed(None)).to_string();
        assert!(
            e.starts_with("in-flight list q:processing:ns/p: WRONGTYPE"),
            "{e}"
        );
    }
}
