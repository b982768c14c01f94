//! Waiting on a condition, with a timeout: the only way tests wait.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_for`] polls.
pub const POLL: Duration = Duration::from_millis(100);

/// Poll `f` every ~100 ms until it yields `Some`; panic with
/// "timed out after Xs waiting for {what}" when `timeout` passes first.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() >= timeout {
            panic!(
                "timed out after {:.1}s waiting for {what}",
                timeout.as_secs_f64()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_some() {
        let mut n = 0;
        let v = wait_for("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            let v = n;
            async move { (v >= 3).then_some(v) }
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 0.3s waiting for nothing")]
    async fn panics_on_timeout() {
        wait_for("nothing", Duration::from_millis(300), || async {
            None::<()>
        })
        .await;
    }
}
