//! A rate limit for warnings that could otherwise repeat on every call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The shortest interval between two warnings of one kind.
const INTERVAL: Duration = Duration::from_secs(60);

/// Lets one warning through per [`INTERVAL`] (tokio time).
#[derive(Debug)]
pub(crate) struct WarnLimit {
    start: tokio::time::Instant,
    /// Milliseconds since `start` of the last warning let through, plus one; 0: none yet.
    last: AtomicU64,
}

impl Default for WarnLimit {
    fn default() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl WarnLimit {
    /// Whether to log now: the first time, then at most once per interval.
    pub(crate) fn allow(&self) -> bool {
        let now = u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let interval = u64::try_from(INTERVAL.as_millis()).unwrap_or(u64::MAX);
        (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_warning_per_interval() {
        let limit = WarnLimit::default();
        assert!(limit.allow());
        assert!(!limit.allow());
        tokio::time::advance(INTERVAL - Duration::from_millis(1)).await;
        assert!(!limit.allow());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limit.allow());
        assert!(!limit.allow());
    }
}
