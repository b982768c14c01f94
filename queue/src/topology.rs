//! How the data nodes are found: one server, a primary named by Redis Sentinel, or a Redis
//! Cluster from its seed nodes; and [`Conn`], the one connection type both users run the queue
//! protocol on, whichever it is. [`unsettled`] says which errors mean "the topology is moving"
//! (a failover, a slot migration): a reason to reconnect and read again, never a reading.

use std::fmt;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

/// A `host:port` of a sentinel or a cluster seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Node {
    /// `host:port` (the port is required: sentinels and cluster nodes have no common default).
    pub fn parse(s: &str) -> Result<Node, String> {
        qscaler_crds::scalerconfig::parse_node(s).map(|(host, port)| Node { host, port })
    }

    /// A comma-separated list of `host:port` (how the nodes travel in one environment variable).
    pub fn parse_list(s: &str) -> Result<Vec<Node>, String> {
        let nodes = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Node::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err("no host:port given".into());
        }
        Ok(nodes)
    }

    /// The inverse of [`Node::parse_list`].
    pub fn join(nodes: &[Node]) -> String {
        nodes
            .iter()
            .map(Node::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Where the sentinels are and how to log in to them (their own credentials and TLS, which may
/// differ from the data nodes').
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelParams {
    pub nodes: Vec<Node>,
    /// The monitored primary's name (`sentinel monitor <name> ...`).
    pub master: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: bool,
    pub tls_insecure: bool,
    pub tls_ca: Option<Vec<u8>>,
}

impl fmt::Debug for SentinelParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelParams")
            .field("nodes", &self.nodes)
            .field("master", &self.master)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("tls_insecure", &self.tls_insecure)
            .field("tls_ca", &self.tls_ca.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Which deployment holds the data.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Topology {
    /// One server (or a proxy in front of several) at the params' host and port.
    #[default]
    Single,
    /// The primary the sentinels name; found again after a failover.
    Sentinel(SentinelParams),
    /// A Redis Cluster, discovered from these seeds; `db` must be 0.
    Cluster(Vec<Node>),
}

/// A connection to the data: a server (one, or the primary the sentinels named) or a cluster.
/// Cheap to clone (both are multiplexed); any error may mean it is gone: drop it and connect anew.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// True on a cluster: one pipeline may only touch keys of one slot there.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Server error codes that mean the topology is moving, not that a key is what it is: a slot
/// that moved or is moving (`MOVED`, `ASK`, `TRYAGAIN`), a cluster without quorum
/// (`CLUSTERDOWN`), a server still loading its data (`LOADING`), a primary that became a replica
/// in a failover (`READONLY`), a blocked take woken by that change (`UNBLOCKED`), or a primary
/// whose replicas lag too far to accept writes (`MASTERDOWN`, `NOREPLICAS`).
const UNSETTLED_CODES: &[&str] = &[
    "MOVED",
    "ASK",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "LOADING",
    "READONLY",
    "UNBLOCKED",
    "MASTERDOWN",
    "NOREPLICAS",
];

/// Whether a server error's first word (its code) says the topology is unsettled. Pure.
pub fn unsettled_code(code: &str) -> bool {
    UNSETTLED_CODES.contains(&code)
}

/// Whether `e` says the topology is unsettled (see [`UNSETTLED_CODES`]): reconnect and read again,
/// and keep what was decided before, instead of taking the answer for an empty queue.
pub fn unsettled(e: &RedisError) -> bool {
    if matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::MasterDown
        )
    ) {
        return true;
    }
    e.code().is_some_and(unsettled_code) || unsettled_text(&e.to_string())
}

/// How the redis crate names the known ones when it shows an error (`Moved: 3999 h:p`).
const UNSETTLED_KINDS: &[&str] = &[
    "Moved",
    "Ask",
    "TryAgain",
    "ClusterDown",
    "BusyLoading",
    "ReadOnly",
    "MasterDown",
];

/// The same rule on an error's text (a pipeline answer that was kept as text): the code as Redis
/// sends it, or the kind as the redis crate shows it, before the first `:`. Pure.
pub fn unsettled_text(text: &str) -> bool {
    let head = text.split(':').next().unwrap_or_default();
    head.split(|c: char| c.is_whitespace() || c == '-' || c == '"')
        .filter(|w| !w.is_empty())
        .any(|w| unsettled_code(w) || UNSETTLED_KINDS.contains(&w))
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag, modulo 16384. Pure. (The
/// redis crate keeps its own to itself; a take's wake-up must reach the node the take blocks on.)
pub fn slot(key: &str) -> u16 {
    let mut crc: u16 = 0;
    for b in crate::keys::hash_tag(key).bytes() {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // CLUSTER KEYSLOT answers of a real server.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("bar"), 5061);
        // CRC16/XMODEM of "123456789" is 0x31C3 (the check value of the algorithm).
        assert_eq!(slot("123456789"), 0x31c3);
        // Keys that share a tag share a slot: a queue and its task keys.
        let q = "jobs";
        for k in [
            crate::keys::processing(q, "ns/w-1"),
            crate::keys::retries(q),
            crate::keys::dead_letter(q),
            crate::keys::consumers(q),
        ] {
            assert_eq!(slot(&k), slot(q), "{k}");
        }
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
    }

    #[test]
    fn nodes_parse_and_join() {
        let n = Node::parse_list("a:1, b.example:26379,").unwrap();
        assert_eq!(
            n,
            vec![
                Node {
                    host: "a".into(),
                    port: 1
                },
                Node {
                    host: "b.example".into(),
                    port: 26379
                }
            ]
        );
        assert_eq!(Node::join(&n), "a:1,b.example:26379");
        for bad in ["", ",", "a", "a:", ":1", "a:0", "a:70000", "a:x"] {
            assert!(Node::parse_list(bad).is_err(), "{bad:?}");
        }
        // An IPv6 address keeps its colons: the port is after the last one.
        assert_eq!(Node::parse("::1:7000").unwrap().host, "::1");
    }

    #[test]
    fn topology_moves_are_unsettled_and_key_errors_are_not() {
        for text in [
            "MOVED 3999 127.0.0.1:6381",
            "ASK 3999 127.0.0.1:6381",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "LOADING Redis is loading the dataset in memory",
            "READONLY You can't write against a read only replica.",
            "UNBLOCKED force unblock from blocking operation, instance state changed",
            "MASTERDOWN Link with MASTER is down",
            "NOREPLICAS Not enough good replicas to write.",
            "An error was signalled by the server - TryAgain: Multiple keys",
            "-MOVED 1 h:1",
            // As the redis crate shows them.
            "Moved: 3999 127.0.0.1:6381",
            "BusyLoading: Redis is loading the dataset in memory",
            "\"UNBLOCKED\": force unblock from blocking operation",
        ] {
            assert!(unsettled_text(text), "{text}");
        }
        for text in [
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "NOAUTH Authentication required.",
            "ERR unknown command",
            "connection refused",
            "the key ASKING-for-trouble is a string",
            "\"WRONGTYPE\": Operation against a key holding the wrong kind of value",
            "ResponseError: the ASK of a MOVED key",
        ] {
            assert!(!unsettled_text(text), "{text}");
        }
        let moved = RedisError::from((
            ErrorKind::Server(ServerErrorKind::Moved),
            "An error was signalled by the server",
            "3999 127.0.0.1:6381".to_string(),
        ));
        assert!(unsettled(&moved), "{moved}");
        let refused = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "An error was signalled by the server",
            "unknown command".to_string(),
        ));
        assert!(!unsettled(&refused), "{refused}");
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(!unsettled(&dropped), "{dropped}");
    }
}
