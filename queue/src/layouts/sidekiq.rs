//! `sidekiq`: Sidekiq's layout (read from Sidekiq 6.4's `fetch.rb`, `launcher.rb`, `processor.rb`).
//!
//! Queued: the list `queue:<name>` (clients `LPUSH`, `BasicFetch` `BRPOP`s). In flight: a fetched job
//! lives only in the process's memory; each process's heartbeat (every 5 s) rewrites the hash
//! `<identity>:workers` (Sidekiq 7: `<identity>:work`), one entry per busy thread, a JSON object whose
//! `queue` is the queue's name. Live processes are the members of the set `processes` whose
//! `<identity>` hash still exists (it expires 60 s after the last heartbeat). So the count needs two
//! steps and is one `EVAL`: one `SMEMBERS`, per process one `EXISTS` and two `HVALS`, one JSON decode
//! per busy job, each tick. A job fetched since the last heartbeat is not seen yet: a scale-down
//! stabilization longer than the heartbeat (the default 30 s is) covers that gap.

use super::{KeyRole, Probe, Query};

/// Counts the busy jobs of queue `ARGV[1]` over the live processes in the set `KEYS[1]`.
const BUSY: &str = r#"
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', id) == 1 then
    for _, suffix in ipairs({':work', ':workers'}) do
      for _, v in ipairs(redis.call('HVALS', id .. suffix)) do
        local ok, w = pcall(cjson.decode, v)
        if ok and type(w) == 'table' and w['queue'] == ARGV[1] then n = n + 1 end
      end
    end
  end
end
return n
"#;

/// Sidekiq's set of process identities.
pub const PROCESSES: &str = "processes";

/// The list a Sidekiq queue's jobs wait in.
pub fn queue_key(queue: &str) -> String {
    format!("queue:{queue}")
}

pub(super) fn probes(q: &Query<'_>) -> Vec<Probe> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(BUSY).arg(1).arg(PROCESSES).arg(q.queue);
    vec![
        Probe::llen(KeyRole::Queue, queue_key(q.queue)),
        Probe::count(KeyRole::InFlight, PROCESSES.to_owned(), "set", cmd),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;
    use crate::layouts::{in_flight, queued, Lengths};
    use qscaler_crds::qworker::QueueFormat;
    use redis::Value;

    fn query(queue: &str) -> Query<'_> {
        testing::query(queue, QueueFormat::Sidekiq)
    }

    #[test]
    fn the_queue_list_then_the_busy_jobs_of_live_processes() {
        let got = testing::keys(&query("mailers"));
        assert_eq!(
            got,
            vec![
                (KeyRole::Queue, "queue:mailers".to_string(), "list"),
                (KeyRole::InFlight, "processes".to_string(), "set"),
            ]
        );
    }

    #[test]
    fn the_script_is_asked_about_this_queue() {
        let p = probes(&query("mailers")).remove(1);
        let args: Vec<Vec<u8>> = p
            .cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => vec![],
            })
            .collect();
        assert_eq!(args[0], b"EVAL");
        assert_eq!(args[1], BUSY.as_bytes());
        assert_eq!(&args[2..], [&b"1"[..], b"processes", b"mailers"]);
    }

    #[test]
    fn answers_count_as_queued_and_in_flight() {
        let ps = probes(&query("q"));
        let total = (ps[0].count)(&Value::Int(4))
            .unwrap()
            .plus((ps[1].count)(&Value::Int(2)).unwrap());
        assert_eq!(
            total,
            Lengths {
                queued: 4,
                in_flight: 2
            }
        );
        // No process has ever run: the set is absent and the script counts 0.
        assert_eq!((ps[1].count)(&Value::Int(0)), Ok(in_flight(0)));
        assert_eq!((ps[0].count)(&Value::Nil), Ok(queued(0)));
        assert!((ps[1].count)(&Value::Int(-1)).is_err());
    }
}
