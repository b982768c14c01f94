//! Wake on a push (issue 17.3): a Redis keyspace-notification subscription to the poller's queue
//! keys (`__keyspace@<db>__:<queue>`) that starts the next tick at once when a task is pushed, so
//! a push to an idle queue does not wait for the poll interval. Polling stays as the fallback.
//!
//! The operator never reconfigures a user's Redis: it reads `notify-keyspace-events` (`CONFIG
//! GET`), and when it lacks keyspace (`K`) list (`l`, or `A`) events it polls only and says so in
//! the ScalerConfig's status message and once in the log. It subscribes either way (cheap), so
//! notifications enabled later work. The subscription reconnects (with backoff) when the
//! connection ends, e.g. on a Redis restart, and checks the setting again each time and every
//! [`CHECK_EVERY`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use qscaler_queue::keys::keyspace_channel;
use qscaler_queue::{Connector, RedisParams, Timeouts};
use tokio::sync::{watch, Notify};

/// How often the connection is pinged and the setting read again.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(30);
/// How often the set of queues is read again from the QWorker cache (a new QWorker's queue is
/// watched within this, not at the next poll, which may be long).
const QUEUES_EVERY: Duration = Duration::from_secs(1);
/// Reconnect backoff bounds.
const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// The least time between two ticks started by pushes: a busy queue must not turn the poller into
/// a busy loop.
pub(super) const MIN_WAKE_GAP: Duration = Duration::from_millis(200);

/// Whether a keyspace event on a list key adds an element (a push, or the destination of a move).
pub(super) fn is_push(event: &str) -> bool {
    matches!(event, "lpush" | "rpush" | "linsert")
}

/// Whether a `notify-keyspace-events` value sends keyspace events of list commands.
pub(super) fn enabled(setting: &str) -> bool {
    setting.contains('K') && (setting.contains('l') || setting.contains('A'))
}

/// What the poller knows of push wake-ups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PushWake {
    /// Keyspace notifications of lists are on: a push wakes the poller.
    On,
    /// They are off (the setting as Redis reports it): polling only.
    Off(String),
    /// The setting could not be read (e.g. CONFIG is renamed or refused).
    Unknown(String),
}

impl PushWake {
    pub fn of(setting: Result<String, String>) -> PushWake {
        match setting {
            Ok(s) if enabled(&s) => PushWake::On,
            Ok(s) => PushWake::Off(s),
            Err(e) => PushWake::Unknown(e),
        }
    }

    /// The ScalerConfig's status message while the broker answers.
    pub fn message(&self) -> String {
        match self {
            PushWake::On => "connected; a push wakes the poller (keyspace notifications)".into(),
            PushWake::Off(s) => format!(
                "connected; polling only: Redis notify-keyspace-events is {s:?}, without keyspace list events (K and l; e.g. CONFIG SET notify-keyspace-events Kl) a push waits for the next poll"
            ),
            PushWake::Unknown(e) => format!(
                "connected; notify-keyspace-events could not be read ({e}): a push wakes the poller only if it includes K and l"
            ),
        }
    }
}

/// Reconnect delays: from [`RECONNECT_MIN`] doubling to [`RECONNECT_MAX`], jittered (so the
/// pollers of many ScalerConfigs on one restarted Redis do not reconnect in step).
pub(super) fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(RECONNECT_MIN)
        .with_max_delay(RECONNECT_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The queues to watch now.
pub(super) type Queues = Box<dyn Fn() -> BTreeSet<String> + Send + Sync>;

/// The subscription's side of a poller: which queues to watch, whom to wake, what to report. Runs
/// until its poller's handle aborts it.
pub(super) struct Subscriber {
    pub params: RedisParams,
    pub timeout: Duration,
    pub queues: Queues,
    pub wake: Arc<Notify>,
    pub state: watch::Sender<Option<PushWake>>,
    /// How often the connection is pinged and the setting read again ([`CHECK_EVERY`]).
    pub check_every: Duration,
    /// For logs.
    pub scaler: String,
}

impl Subscriber {
    pub async fn run(self) {
        let mut backoff = reconnect_backoff();
        loop {
            let started = tokio::time::Instant::now();
            let e = self.session().await;
            tracing::debug!(scalerconfig = %self.scaler, error = %e, "keyspace subscription ended; reconnecting");
            if started.elapsed() > RECONNECT_MAX {
                // A session that lasted starts the delays over.
                backoff = reconnect_backoff();
            }
            let wait = backoff.next().unwrap_or(RECONNECT_MAX);
            tokio::time::sleep(wait).await;
        }
    }

    fn report(&self, now: PushWake) {
        let changed = self.state.send_if_modified(|s| {
            let changed = s.as_ref() != Some(&now);
            *s = Some(now.clone());
            changed
        });
        if changed {
            match &now {
                PushWake::On => {
                    tracing::info!(scalerconfig = %self.scaler, "keyspace notifications on: a push wakes the poller")
                }
                _ => {
                    tracing::warn!(scalerconfig = %self.scaler, "{}", now.message())
                }
            }
        }
    }

    /// One connection's life, until it fails.
    async fn session(&self) -> String {
        match self.subscribed().await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn subscribed(&self) -> Result<std::convert::Infallible, String> {
        let connector = Connector::new(&self.params).map_err(|e| e.to_string())?;
        let t = Timeouts {
            connect: self.timeout,
            response: self.timeout,
        };
        let mut conn = tokio::time::timeout(self.timeout * 2, connector.connect(t))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        self.report(PushWake::of(read_setting(&mut conn).await));
        let pubsub = tokio::time::timeout(self.timeout * 2, connector.pubsub())
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let (mut sink, mut stream) = pubsub.split();
        let db = self.params.db;
        let mut subscribed: BTreeSet<String> = BTreeSet::new();
        let mut check = tokio::time::interval(self.check_every);
        check.tick().await;
        let mut refresh = tokio::time::interval(QUEUES_EVERY);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let msg = msg.ok_or("connection closed")?;
                    if msg.get_payload::<String>().is_ok_and(|e| is_push(&e)) {
                        self.wake.notify_one();
                    }
                }
                _ = refresh.tick() => {
                    let want = (self.queues)();
                    for q in want.difference(&subscribed) {
                        sink.subscribe(keyspace_channel(db, q)).await.map_err(|e| e.to_string())?;
                    }
                    for q in subscribed.difference(&want) {
                        sink.unsubscribe(keyspace_channel(db, q)).await.map_err(|e| e.to_string())?;
                    }
                    subscribed = want;
                }
                _ = check.tick() => {
                    // Subscribed, Redis answers a PING with ["pong", ""], not "PONG".
                    tokio::time::timeout(self.timeout * 2, sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| "ping timed out".to_string())?
                        .map_err(|e| e.to_string())?;
                    self.report(PushWake::of(read_setting(&mut conn).await));
                }
            }
        }
    }
}

/// `CONFIG GET notify-keyspace-events`: the value, or why it could not be read.
async fn read_setting(c: &mut qscaler_queue::Conn) -> Result<String, String> {
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(c)
        .await
        .map_err(|e| e.to_string())?;
    pair.get(1)
        .cloned()
        .ok_or_else(|| "no such setting".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_redis::RedisServer;

    #[test]
    fn keyspace_list_events_are_needed() {
        assert!(enabled("Kl"));
        assert!(enabled("KEA"));
        assert!(enabled("lK"));
        assert!(!enabled(""));
        assert!(!enabled("El"), "keyevent only: no per-key channel");
        assert!(!enabled("Kg$"), "no list events");
        assert_eq!(PushWake::of(Ok("Klg".into())), PushWake::On);
        assert_eq!(PushWake::of(Ok("".into())), PushWake::Off("".into()));
        assert!(matches!(
            PushWake::of(Err("unknown command".into())),
            PushWake::Unknown(_)
        ));
    }

    #[test]
    fn only_additions_wake() {
        for e in ["lpush", "rpush", "linsert"] {
            assert!(is_push(e), "{e}");
        }
        for e in ["lpop", "rpop", "del", "lrem", "ltrim", "expired", "lset"] {
            assert!(!is_push(e), "{e}");
        }
        assert_eq!(keyspace_channel(3, "mail"), "__keyspace@3__:mail");
    }

    /// The ids of the server's pub/sub clients.
    async fn pubsub_clients(c: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(c)
            .await
            .expect("CLIENT LIST");
        list.lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    /// One subscription lives through its checks (a PING while subscribed answers an array): the
    /// same pub/sub client is there after several, and a push still wakes the poller.
    #[tokio::test]
    async fn a_subscription_outlives_its_checks_and_a_push_wakes() {
        let server = RedisServer::start().await;
        let mut c = server.conn().await.expect("a connection");
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("Kl")
            .query_async(&mut c)
            .await
            .expect("CONFIG SET");
        let wake = Arc::new(Notify::new());
        let (state, mut seen) = watch::channel(None);
        let subscriber = tokio::spawn(
            Subscriber {
                params: RedisParams::from_url(&server.url()).unwrap(),
                timeout: Duration::from_secs(2),
                queues: Box::new(|| BTreeSet::from(["q".to_string()])),
                wake: wake.clone(),
                state,
                check_every: Duration::from_millis(100),
                scaler: "test/redis".into(),
            }
            .run(),
        );
        let on = tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|s| s.is_some()))
            .await
            .expect("the setting read")
            .expect("the subscriber runs")
            .clone();
        assert_eq!(on, Some(PushWake::On));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let first = loop {
            let numsub: (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(keyspace_channel(0, "q"))
                .query_async(&mut c)
                .await
                .expect("PUBSUB NUMSUB");
            if numsub.1 == 1 {
                break pubsub_clients(&mut c).await;
            }
            assert!(tokio::time::Instant::now() < deadline, "never subscribed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(first.len(), 1, "{first:?}");
        // Ten checks later: the same client, still subscribed.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(pubsub_clients(&mut c).await, first);
        let _: i64 = redis::cmd("LPUSH")
            .arg("q")
            .arg("t")
            .query_async(&mut c)
            .await
            .expect("LPUSH");
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("the push woke the poller");
        subscriber.abort();
    }

    #[test]
    fn reconnects_back_off_within_bounds() {
        let delays: Vec<Duration> = reconnect_backoff().take(12).collect();
        assert_eq!(delays.len(), 12, "the delays never run out");
        // Jitter adds up to one more delay: each is at least the doubled one, capped near the max.
        assert!(
            delays[0] >= RECONNECT_MIN && delays[0] <= RECONNECT_MIN * 2,
            "{delays:?}"
        );
        assert!(delays.iter().all(|d| *d <= RECONNECT_MAX * 2), "{delays:?}");
        assert!(delays[11] >= RECONNECT_MAX, "reaches the max: {delays:?}");
    }
}
