//! Helpers for tests of every crate (feature `testsuite`; never in the binary).

use std::time::Duration;

/// Polls `condition` until it holds; panics naming `what` after `limit`. It waits on tokio's
/// clock, so under paused time (`start_paused = true`) the polls cost nothing and the limit is
/// exact. Polls every `limit / 200`, between 1 ms and 50 ms.
pub async fn wait_until(limit: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    wait_until_ok(limit, what, async || if condition().await { Ok(()) } else { Err("not yet".to_owned()) }).await
}

/// [`wait_until`] for checks that can say what is still wrong: polls `check` until it returns
/// `Ok`; after `limit`, panics naming `what` and the last problem `check` reported.
pub async fn wait_until_ok(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> Result<(), String>) {
    let until = tokio::time::Instant::now() + limit;
    let poll = (limit / 200).clamp(Duration::from_millis(1), Duration::from_millis(50));
    loop {
        match check().await {
            Ok(()) => return,
            Err(problem) => assert!(
                tokio::time::Instant::now() < until,
                "timed out after {limit:?} waiting until {what}; last: {problem}"
            ),
        }
        tokio::time::sleep(poll).await;
    }
}
