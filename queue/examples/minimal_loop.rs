//! The baseline of `bench/task-throughput.sh`: the least a reliable task-mode worker does per task,
//! hand-written and synchronous. `BLMOVE` into a processing list, fork/exec COMMAND with the
//! payload on stdin, wait for it, `LREM` the task. No retries, signals, drain or usage: whatever
//! qsupervisor spends above this is its own overhead.
//!
//! Usage: `minimal_loop REDIS_URL QUEUE -- COMMAND [ARGS...]`; runs until killed.

use std::io::Write;
use std::process::{Command, Stdio};

use qscaler_queue::TaskKeys;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, queue, command) = match args.as_slice() {
        [url, queue, dashes, command @ ..] if dashes == "--" && !command.is_empty() => {
            (url, queue, command)
        }
        _ => return Err("usage: minimal_loop REDIS_URL QUEUE -- COMMAND [ARGS...]".into()),
    };
    let keys = TaskKeys::new(queue, "minimal-loop");
    let mut c = redis::Client::open(url.as_str())?.get_connection()?;
    loop {
        let item: Option<Vec<u8>> = redis::cmd("BLMOVE")
            .arg(&keys.queue)
            .arg(&keys.processing)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(5)
            .query(&mut c)?;
        let Some(item) = item else { continue };
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its stdin closes it: not an error here.
            let _ = stdin.write_all(&item);
        }
        child.wait()?;
        redis::cmd("LREM")
            .arg(&keys.processing)
            .arg(1)
            .arg(&item)
            .query::<i64>(&mut c)?;
    }
}
