//! Where the broker is and how it is trusted → a Redis client, and connections that give up in
//! time. The operator resolves these from a ScalerConfig (password and CA from Secrets),
//! qsupervisor from its environment; both connect here, so TLS works the same on both sides: the
//! server verified with the given CA, else the system roots, or not at all (`tls_insecure`).

use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
    TlsCertificates, TlsMode,
};

use crate::topology::{Conn, Node, SentinelParams, Topology};

/// Why parameters cannot make a client.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("not a Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    #[error("unix socket URLs are not supported: give a host and port")]
    UnixSocket,
    #[error("a CA bundle is given but TLS is off: a CA is only used with TLS")]
    CaWithoutTls,
    #[error("a CA bundle is given and verification is skipped: give a CA or skip verification, not both")]
    CaAndInsecure,
    /// "holds no PEM certificate …", "cannot be loaded: …": the caller names the bundle.
    #[error("{0}")]
    BadCa(String),
    #[error("the Redis client cannot be configured: {0}")]
    Client(#[source] redis::RedisError),
    #[error("Redis Cluster has only database 0 (db {0} is given)")]
    ClusterDb(i64),
    #[error("no {0} node is given")]
    NoNodes(&'static str),
}

/// Where and how to connect. Equality covers every field, so a rotated password or CA counts as a
/// change (the operator restarts its poller on one).
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
    /// How the data nodes are found; `host`/`port` are only used by [`Topology::Single`].
    pub topology: Topology,
}

impl fmt::Debug for RedisParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("tls_insecure", &self.tls_insecure)
            .field("tls_ca", &self.tls_ca.as_ref().map(|_| "<redacted>"))
            .field("topology", &self.topology)
            .finish()
    }
}

/// The URL without the password, and how the server is verified: what logs may show.
impl fmt::Display for RedisParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self
            .username
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let verify = match (self.tls, self.tls_insecure, self.tls_ca.is_some()) {
            (false, _, _) => "",
            (true, true, _) => " (certificate not verified)",
            (true, false, true) => " (verified with the given CA)",
            (true, false, false) => " (verified with the system roots)",
        };
        let (scheme, at, db) = (self.scheme(), self.at(), self.db);
        write!(f, "{scheme}://{user}{at}/{db}{verify}")
    }
}

impl RedisParams {
    /// `redis://host:port/db` or `rediss://...`, without credentials (for messages).
    pub fn display_url(&self) -> String {
        format!("{}://{}/{}", self.scheme(), self.at(), self.db)
    }

    fn scheme(&self) -> &'static str {
        match (&self.topology, self.tls) {
            (Topology::Single, false) => "redis",
            (Topology::Single, true) => "rediss",
            (Topology::Sentinel(_), false) => "redis+sentinel",
            (Topology::Sentinel(_), true) => "rediss+sentinel",
            (Topology::Cluster(_), false) => "redis+cluster",
            (Topology::Cluster(_), true) => "rediss+cluster",
        }
    }

    /// Where: `host:port`, the sentinels and the primary's name, or the cluster's seeds.
    fn at(&self) -> String {
        match &self.topology {
            Topology::Single => format!("{}:{}", self.host, self.port),
            Topology::Sentinel(s) => format!("{}/{}", Node::join(&s.nodes), s.master),
            Topology::Cluster(seeds) => Node::join(seeds),
        }
    }

    /// From a `redis://` or `rediss://` URL (`#insecure` skips verification, as the redis crate
    /// reads it); no CA: set `tls_ca` afterwards.
    pub fn from_url(url: &str) -> Result<RedisParams, ParamsError> {
        let info = url.into_connection_info().map_err(ParamsError::Url)?;
        let (host, port, tls, tls_insecure) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port, false, false),
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => (host.clone(), *port, true, *insecure),
            _ => return Err(ParamsError::UnixSocket),
        };
        let r = info.redis_settings();
        Ok(RedisParams {
            host,
            port,
            db: r.db(),
            username: r.username().filter(|u| !u.is_empty()).map(str::to_owned),
            password: r.password().filter(|p| !p.is_empty()).map(str::to_owned),
            tls,
            tls_insecure,
            tls_ca: None,
            topology: Topology::Single,
        })
    }

    /// Refuses what cannot be meant: a CA without TLS, a CA with verification skipped, a CA that
    /// is not one. (The operator's schema validation refuses the same in a ScalerConfig.)
    pub fn validate(&self) -> Result<(), ParamsError> {
        match &self.topology {
            Topology::Cluster(seeds) if seeds.is_empty() => {
                return Err(ParamsError::NoNodes("cluster seed"))
            }
            Topology::Cluster(_) if self.db != 0 => return Err(ParamsError::ClusterDb(self.db)),
            Topology::Sentinel(s) if s.nodes.is_empty() => {
                return Err(ParamsError::NoNodes("sentinel"))
            }
            Topology::Sentinel(s) => check_tls(s.tls, s.tls_insecure, s.tls_ca.as_deref())?,
            _ => {}
        }
        check_tls(self.tls, self.tls_insecure, self.tls_ca.as_deref())
    }

    /// The client: plain TCP; TLS verified with `tls_ca`, or with the system roots when none is
    /// given; or TLS without verification (`tls_insecure`). A CA without TLS is not used. No I/O.
    pub fn client(&self) -> Result<Client, ParamsError> {
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
        let settings = redis_settings(self);
        let info = addr
            .into_connection_info()
            .map_err(ParamsError::Client)?
            .set_redis_settings(settings);
        match (&self.tls_ca, self.tls) {
            (Some(pem), true) => Client::build_with_tls(info, certificates(pem))
                .map_err(|e| ParamsError::BadCa(format!("cannot be loaded: {e}"))),
            _ => Client::open(info).map_err(ParamsError::Client),
        }
    }
}

/// A CA only with TLS and verification, and a loadable one.
fn check_tls(tls: bool, insecure: bool, ca: Option<&[u8]>) -> Result<(), ParamsError> {
    let Some(ca) = ca else {
        return Ok(());
    };
    if !tls {
        return Err(ParamsError::CaWithoutTls);
    }
    if insecure {
        return Err(ParamsError::CaAndInsecure);
    }
    check_ca_pem(ca)
}

fn tls_mode(tls: bool, insecure: bool) -> Option<TlsMode> {
    match (tls, insecure) {
        (false, _) => None,
        (true, false) => Some(TlsMode::Secure),
        (true, true) => Some(TlsMode::Insecure),
    }
}

/// The data nodes' login (db, username, password).
fn redis_settings(p: &RedisParams) -> RedisConnectionInfo {
    let mut settings = RedisConnectionInfo::default().set_db(p.db);
    if let Some(u) = p.username.as_deref().filter(|u| !u.is_empty()) {
        settings = settings.set_username(u);
    }
    if let Some(pw) = p.password.as_deref().filter(|p| !p.is_empty()) {
        settings = settings.set_password(pw);
    }
    settings
}

fn certificates(pem: &[u8]) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// Checks a CA bundle before it is used: it must hold at least one PEM certificate, all of them
/// parseable. An empty trust store would otherwise surface later as an opaque "unknown issuer"
/// on every connection.
pub fn check_ca_pem(pem: &[u8]) -> Result<(), ParamsError> {
    if !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(ParamsError::BadCa(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Client::build_with_tls("rediss://localhost", certificates(pem))
        .map(|_| ())
        .map_err(|e| ParamsError::BadCa(format!("cannot be loaded: {e}")))
}

/// How long connecting and each reply may take. A blocking command's reply takes as long as it
/// blocks: give its connection a response timeout above that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
}

/// A client and what logs may say of it. Cheap to clone; connects anew on each [`Connector::connect`].
#[derive(Clone)]
pub struct Connector {
    backend: Backend,
    shown: String,
}

/// What a [`Connector`] connects through.
#[derive(Clone)]
enum Backend {
    Single(Client),
    /// Built again on each connect: the sentinels are asked where the primary is now.
    Sentinel(Box<RedisParams>, SentinelParams),
    /// Built again on each connect, with that connection's timeouts (no I/O).
    Cluster(Box<RedisParams>, Vec<Node>),
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Connector {
    pub fn new(params: &RedisParams) -> Result<Connector, ParamsError> {
        let backend = match &params.topology {
            Topology::Single => Backend::Single(params.client()?),
            Topology::Sentinel(s) => {
                // Built once here so a bad setting is refused now, not at the first connect.
                sentinel_builder(params, s)?;
                Backend::Sentinel(Box::new(params.clone()), s.clone())
            }
            Topology::Cluster(seeds) => {
                cluster_client(params, seeds, DEFAULT_TIMEOUTS)?;
                Backend::Cluster(Box::new(params.clone()), seeds.clone())
            }
        };
        Ok(Connector {
            backend,
            shown: params.to_string(),
        })
    }

    /// A new connection (each caller that blocks needs one of its own). Through Sentinel: to the
    /// server the sentinels name as the primary now.
    pub async fn connect(&self, t: Timeouts) -> redis::RedisResult<Conn> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t.connect))
            .set_response_timeout(Some(t.response));
        match &self.backend {
            Backend::Single(client) => client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map(Conn::Single),
            Backend::Sentinel(..) => self.connect_to_primary(t).await.map(|(c, _)| c),
            Backend::Cluster(params, seeds) => cluster_client(params, seeds, t)
                .map_err(|e| redis_error(&e))?
                .get_async_connection()
                .await
                .map(Conn::Cluster),
        }
    }

    /// [`Connector::connect`], and through Sentinel the primary's address it connected to (to
    /// compare with what the sentinels name later: a demoted primary may still take writes until
    /// the sentinels reconfigure it, which can take seconds).
    pub async fn connect_to_primary(
        &self,
        t: Timeouts,
    ) -> redis::RedisResult<(Conn, Option<Node>)> {
        let Backend::Sentinel(params, s) = &self.backend else {
            return Ok((Box::pin(self.connect(t)).await?, None));
        };
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t.connect))
            .set_response_timeout(Some(t.response));
        let client = sentinel_builder(params, s)
            .map_err(|e| redis_error(&e))?
            .build()?
            .async_get_client()
            .await?;
        let node = match client.get_connection_info().addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                Some(Node {
                    host: host.clone(),
                    port: *port,
                })
            }
            _ => None,
        };
        let conn = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        Ok((Conn::Single(conn), node))
    }

    /// A connection to the first sentinel that answers, with the sentinels' login and TLS;
    /// `None` unless through Sentinel.
    pub async fn sentinel(&self, t: Timeouts) -> redis::RedisResult<Option<MultiplexedConnection>> {
        let Backend::Sentinel(_, s) = &self.backend else {
            return Ok(None);
        };
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t.connect))
            .set_response_timeout(Some(t.response));
        let mut settings = RedisConnectionInfo::default();
        if let Some(u) = s.username.as_deref().filter(|u| !u.is_empty()) {
            settings = settings.set_username(u);
        }
        if let Some(pw) = s.password.as_deref().filter(|p| !p.is_empty()) {
            settings = settings.set_password(pw);
        }
        let mut last = None;
        for addr in tcp(&s.nodes, tls_mode(s.tls, s.tls_insecure)) {
            let info = addr
                .into_connection_info()?
                .set_redis_settings(settings.clone());
            let client = match (&s.tls_ca, s.tls) {
                (Some(pem), true) => Client::build_with_tls(info, certificates(pem))?,
                _ => Client::open(info)?,
            };
            match client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
            {
                Ok(c) => return Ok(Some(c)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| redis_error(&ParamsError::NoNodes("sentinel"))))
    }

    /// The primary the sentinels name now (`SENTINEL GET-MASTER-ADDR-BY-NAME`), on a connection
    /// from [`Connector::sentinel`]; `None` when they know no such primary or this is no Sentinel.
    pub async fn named_primary(
        &self,
        c: &mut MultiplexedConnection,
    ) -> redis::RedisResult<Option<Node>> {
        let Backend::Sentinel(_, s) = &self.backend else {
            return Ok(None);
        };
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&s.master)
            .query_async(c)
            .await?;
        Ok(addr.map(|(host, port)| Node { host, port }))
    }

    /// A pub/sub connection (e.g. for keyspace notifications), with the same address, TLS and
    /// credentials; the caller bounds the wait. Through Sentinel: to the primary now. A cluster
    /// has no one server whose notifications cover every queue: refused.
    pub async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        match &self.backend {
            Backend::Single(client) => client.get_async_pubsub().await,
            Backend::Sentinel(params, s) => {
                sentinel_builder(params, s)
                    .map_err(|e| redis_error(&e))?
                    .build()?
                    .async_get_client()
                    .await?
                    .get_async_pubsub()
                    .await
            }
            Backend::Cluster(..) => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "keyspace notifications are per node on Redis Cluster: not subscribed",
            ))),
        }
    }

    /// Where the client connects (for tests of the TLS choice); `None` unless one server.
    pub fn addr(&self) -> Option<&ConnectionAddr> {
        match &self.backend {
            Backend::Single(client) => Some(client.get_connection_info().addr()),
            _ => None,
        }
    }
}

fn redis_error(e: &ParamsError) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "bad Redis settings",
        e.to_string(),
    ))
}

fn tcp(nodes: &[Node], tls: Option<TlsMode>) -> Vec<ConnectionAddr> {
    nodes
        .iter()
        .map(|n| match tls {
            None => ConnectionAddr::Tcp(n.host.clone(), n.port),
            Some(mode) => ConnectionAddr::TcpTls {
                host: n.host.clone(),
                port: n.port,
                insecure: mode == TlsMode::Insecure,
                tls_params: None,
            },
        })
        .collect()
}

/// The sentinels' client: their own login and TLS, and the data nodes' for the primary.
fn sentinel_builder(
    p: &RedisParams,
    s: &SentinelParams,
) -> Result<SentinelClientBuilder, ParamsError> {
    let sentinel_tls = tls_mode(s.tls, s.tls_insecure);
    let mut b = SentinelClientBuilder::new(
        tcp(&s.nodes, sentinel_tls),
        &s.master,
        SentinelServerType::Master,
    )
    .map_err(ParamsError::Client)?
    .set_client_to_redis_db(p.db);
    if let Some(u) = p.username.as_deref().filter(|u| !u.is_empty()) {
        b = b.set_client_to_redis_username(u);
    }
    if let Some(pw) = p.password.as_deref().filter(|p| !p.is_empty()) {
        b = b.set_client_to_redis_password(pw);
    }
    if let Some(mode) = tls_mode(p.tls, p.tls_insecure) {
        b = b.set_client_to_redis_tls_mode(mode);
    }
    if let (Some(pem), true) = (&p.tls_ca, p.tls) {
        b = b.set_client_to_redis_certificates(certificates(pem));
    }
    if let Some(u) = s.username.as_deref().filter(|u| !u.is_empty()) {
        b = b.set_client_to_sentinel_username(u);
    }
    if let Some(pw) = s.password.as_deref().filter(|p| !p.is_empty()) {
        b = b.set_client_to_sentinel_password(pw);
    }
    if let Some(mode) = sentinel_tls {
        b = b.set_client_to_sentinel_tls_mode(mode);
    }
    if let (Some(pem), true) = (&s.tls_ca, s.tls) {
        b = b.set_client_to_sentinel_certificates(certificates(pem));
    }
    Ok(b)
}

/// What a cluster client is checked with when its settings are first given.
const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    response: Duration::from_secs(5),
};

/// The cluster's client from its seeds, with the data nodes' login and TLS, and the timeouts of
/// the connections it makes.
fn cluster_client(
    p: &RedisParams,
    seeds: &[Node],
    t: Timeouts,
) -> Result<ClusterClient, ParamsError> {
    let settings = redis_settings(p);
    let infos = tcp(seeds, tls_mode(p.tls, p.tls_insecure))
        .into_iter()
        .map(|a| {
            a.into_connection_info()
                .map(|i| i.set_redis_settings(settings.clone()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(ParamsError::Client)?;
    let mut b = ClusterClientBuilder::new(infos)
        .connection_timeout(t.connect)
        .response_timeout(t.response);
    if let Some(mode) = tls_mode(p.tls, p.tls_insecure) {
        b = b.tls(mode);
    }
    if let (Some(pem), true) = (&p.tls_ca, p.tls) {
        b = b.certs(certificates(pem));
    }
    b.build().map_err(ParamsError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway self-signed CA certificate (public part only; its key was discarded).
    const TEST_CA: &str = include_str!("../../tests/data/test-ca.pem");

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
            topology: Topology::Single,
        }
    }

    fn addr(p: &RedisParams) -> ConnectionAddr {
        Connector::new(p).unwrap().addr().unwrap().clone()
    }

    #[test]
    fn neither_debug_nor_display_shows_the_password_or_the_ca() {
        let mut p = params(true, false, Some(TEST_CA));
        p.username = Some("worker".into());
        for shown in [format!("{p:?}"), p.to_string(), p.display_url()] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("MIIB"), "{shown}");
        }
        assert_eq!(p.display_url(), "rediss://h:1/0");
        assert_eq!(
            p.to_string(),
            "rediss://worker@h:1/0 (verified with the given CA)"
        );
        let c = Connector::new(&p).unwrap();
        assert_eq!(format!("{c} {c:?}").matches("worker@h:1/0").count(), 2);
        assert_eq!(params(false, false, None).to_string(), "redis://h:1/0");
        assert!(params(true, false, None)
            .to_string()
            .ends_with("(verified with the system roots)"));
        assert!(params(true, true, None)
            .to_string()
            .ends_with("(certificate not verified)"));
    }

    #[test]
    fn a_rotated_password_or_ca_makes_different_params() {
        let a = params(true, false, Some(TEST_CA));
        assert_eq!(a, params(true, false, Some(TEST_CA)));
        assert_ne!(a, params(true, false, Some("other")));
        assert_ne!(a, params(true, false, None));
        let mut b = a.clone();
        b.password = Some("rotated".into());
        assert_ne!(a, b);
    }

    #[test]
    fn urls_become_params() {
        let p = RedisParams::from_url("redis://u:secret@h:6380/2").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.db, p.tls, p.tls_insecure),
            ("h", 6380, 2, false, false)
        );
        assert_eq!(p.username.as_deref(), Some("u"));
        assert_eq!(p.password.as_deref(), Some("secret"));
        let p = RedisParams::from_url("rediss://h").unwrap();
        assert_eq!(
            (p.port, p.db, p.tls, p.tls_insecure),
            (6379, 0, true, false)
        );
        assert!(p.password.is_none() && p.username.is_none());
        assert!(
            RedisParams::from_url("rediss://h:1/0#insecure")
                .unwrap()
                .tls_insecure
        );
        assert!(matches!(
            RedisParams::from_url("redis+unix:///tmp/r.sock"),
            Err(ParamsError::UnixSocket)
        ));
        assert!(matches!(
            RedisParams::from_url("nonsense"),
            Err(ParamsError::Url(_))
        ));
    }

    #[test]
    fn clients_for_plain_tls_with_ca_system_roots_and_insecure() {
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
        // A CA on a plain connection is not used (validate() and the schema refuse it).
        assert!(matches!(
            addr(&params(false, false, Some(TEST_CA))),
            ConnectionAddr::Tcp(..)
        ));
    }

    #[test]
    fn contradictory_or_broken_tls_settings_are_refused() {
        assert!(params(true, false, Some(TEST_CA)).validate().is_ok());
        assert!(params(true, true, None).validate().is_ok());
        assert!(params(false, false, None).validate().is_ok());
        assert!(matches!(
            params(false, false, Some(TEST_CA)).validate(),
            Err(ParamsError::CaWithoutTls)
        ));
        assert!(matches!(
            params(true, true, Some(TEST_CA)).validate(),
            Err(ParamsError::CaAndInsecure)
        ));
        let e = params(true, false, Some("hello")).validate().unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn ca_bundles_are_checked() {
        assert!(check_ca_pem(TEST_CA.as_bytes()).is_ok());
        let two = format!("{TEST_CA}{TEST_CA}");
        assert!(check_ca_pem(two.as_bytes()).is_ok());
        assert!(check_ca_pem(b"").is_err());
        assert!(check_ca_pem(b"not a certificate").is_err());
        let broken = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        let e = check_ca_pem(broken.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("cannot be loaded"), "{e}");
    }
}
