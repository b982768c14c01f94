//! Task mode's queue, list or stream: one dispatch, so the task loop ([`crate::task`]) is written
//! once. A list's moves are [`qscaler_queue::task`]'s, a stream's [`qscaler_queue::stream_task`]'s.

use std::time::Duration;

use qscaler_crds::qworker::QueueFormat;
use qscaler_queue::stream_task::{self, Entry, StreamKeys};
use qscaler_queue::task::{self, Settle};
use qscaler_queue::{Conn, TaskKeys};
use redis::RedisResult;
use tracing::error;

/// A task taken: its payload and, from a stream, its entry id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub id: Option<String>,
    pub payload: Vec<u8>,
}

/// This consumer of its queue.
#[derive(Clone, Debug)]
pub struct Consumer {
    /// The list keys; for a stream, the keys of its `{queue}` slot ([`Consumer::client_id`] and
    /// [`Consumer::unblock`] route by them).
    list: TaskKeys,
    stream: Option<StreamKeys>,
}

impl Consumer {
    /// `format` is a list or a stream (the CLI refuses other formats in task mode).
    pub fn new(queue: &str, consumer: &str, format: QueueFormat, group: Option<&str>) -> Consumer {
        Consumer {
            list: TaskKeys::new(queue, consumer),
            stream: (format == QueueFormat::Stream)
                .then(|| StreamKeys::new(queue, group, consumer)),
        }
    }

    /// Where a taken task waits while it runs, for the logs.
    pub fn holding(&self) -> String {
        match &self.stream {
            Some(s) => format!("pending entries of group {:?}", s.group),
            None => format!("processing list {:?}", self.list.processing),
        }
    }

    /// Where tasks that failed every retry go.
    pub fn dead(&self) -> &str {
        match &self.stream {
            Some(s) => &s.dead,
            None => &self.list.dead,
        }
    }

    /// Joins the queue's registry (and a stream's group, created if missing) before the first take.
    pub async fn register(&self, c: &mut Conn) -> RedisResult<()> {
        match &self.stream {
            Some(s) => {
                stream_task::ensure_group(c, s).await?;
                stream_task::register(c, s).await
            }
            None => task::register(c, &self.list).await,
        }
    }

    pub async fn client_id(&self, c: &mut Conn) -> RedisResult<i64> {
        task::client_id(c, &self.list).await
    }

    pub async fn unblock(&self, c: &mut Conn, id: i64) -> RedisResult<()> {
        task::unblock(c, &self.list, id).await
    }

    /// One blocking take. From a stream: a returned entry first, else a new one; an entry without
    /// a payload field is dead-lettered at once (it cannot run) and reads as nothing taken.
    pub async fn take(&self, c: &mut Conn, block: Duration) -> RedisResult<Option<Held>> {
        let Some(s) = &self.stream else {
            let item = task::take(c, &self.list, block).await?;
            return Ok(item.map(|payload| Held { id: None, payload }));
        };
        let entry = match stream_task::take_returned(c, s).await? {
            Some(e) => Some(e),
            None => stream_task::take_new(c, s, block).await?,
        };
        match entry {
            Some(e) => self.runnable(c, s, e).await,
            None => Ok(None),
        }
    }

    /// What this consumer holds from before (a restarted container), oldest first.
    pub async fn held(&self, c: &mut Conn) -> RedisResult<Vec<Held>> {
        let Some(s) = &self.stream else {
            let items = task::held(c, &self.list).await?;
            return Ok(items
                .into_iter()
                .map(|payload| Held { id: None, payload })
                .collect());
        };
        // The group may be gone (deleted by hand): a read would fail until it is back.
        stream_task::ensure_group(c, s).await?;
        let mut out = vec![];
        for e in stream_task::held(c, s).await? {
            out.extend(self.runnable(c, s, e).await?);
        }
        Ok(out)
    }

    /// An entry with its payload; one without is dead-lettered.
    async fn runnable(&self, c: &mut Conn, s: &StreamKeys, e: Entry) -> RedisResult<Option<Held>> {
        match e.payload {
            Some(payload) => Ok(Some(Held {
                id: Some(e.id),
                payload,
            })),
            None => {
                error!(
                    "stream entry {} has no {:?} field (or was deleted): moved to {:?}",
                    e.id,
                    qscaler_crds::names::stream::PAYLOAD_FIELD,
                    s.dead
                );
                stream_task::settle(c, s, &e, Settle::DeadLetter, None).await?;
                Ok(None)
            }
        }
    }

    /// Settles `h` for good; `ran` goes to the queue's task timings.
    pub async fn settle(
        &self,
        c: &mut Conn,
        h: &Held,
        how: Settle,
        ran: Duration,
    ) -> RedisResult<()> {
        match (&self.stream, &h.id) {
            (Some(s), Some(id)) => stream_task::settle(c, s, &entry(id, h), how, Some(ran)).await,
            _ => task::settle_timed(c, &self.list, &h.payload, how, Some(ran)).await,
        }
    }

    /// Counts a failed run of `h`; the count after it.
    pub async fn count_failed_run(&self, c: &mut Conn, h: &Held) -> RedisResult<i64> {
        match (&self.stream, &h.id) {
            (Some(s), Some(id)) => stream_task::count_failed_run(c, s, &entry(id, h)).await,
            _ => task::count_failed_run(c, &self.list, &h.payload).await,
        }
    }

    /// Gives the oldest held task back (a list's consuming end, a stream's pool of returned
    /// entries); what it was, for the logs; `None`: nothing was held.
    pub async fn give_back(&self, c: &mut Conn) -> RedisResult<Option<String>> {
        match &self.stream {
            Some(s) => Ok(stream_task::give_back(c, s)
                .await?
                .map(|id| format!("entry {id}"))),
            None => Ok(task::give_back(c, &self.list)
                .await?
                .map(|item| String::from_utf8_lossy(&item).into_owned())),
        }
    }
}

impl Consumer {
    /// Leaves the registry (and a stream's group) at exit when nothing is held; `false`: tasks are
    /// still held, so the operator finds them.
    pub async fn unregister(&self, c: &mut Conn) -> RedisResult<bool> {
        match &self.stream {
            Some(s) => stream_task::unregister(c, s).await,
            None => task::unregister(c, &self.list).await,
        }
    }
}

fn entry(id: &str, h: &Held) -> Entry {
    Entry {
        id: id.to_owned(),
        payload: Some(h.payload.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_consumer_reads_its_group_and_a_list_consumer_its_processing_list() {
        let list = Consumer::new("jobs", "ns/w-1", QueueFormat::List, Some("ignored"));
        assert!(list.stream.is_none());
        assert_eq!(list.dead(), "{jobs}:dead");
        assert!(list.holding().contains("{jobs}:processing:ns/w-1"));
        let stream = Consumer::new("jobs", "ns/w-1", QueueFormat::Stream, None);
        let s = stream.stream.as_ref().unwrap();
        assert_eq!(s.group, qscaler_crds::names::stream::DEFAULT_GROUP);
        assert_eq!(s.consumer, "ns/w-1");
        assert_eq!(stream.dead(), "{jobs}:dead");
        assert!(stream.holding().contains("qscaler"));
        let named = Consumer::new("jobs", "ns/w-1", QueueFormat::Stream, Some("billing"));
        assert_eq!(named.stream.unwrap().group, "billing");
    }
}
