//! The injected clock: every token lifetime, cache expiry and certificate validity reads `now` from here,
//! so tests control time instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A source of the current time in epoch seconds.
///
/// `Clock::system()` reads the wall clock; `Clock::manual(t)` starts at `t` and moves only when the
/// test calls [`Clock::advance`]. Cloning shares the same underlying time.
#[derive(Clone, Debug)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// A clock frozen at `epoch_seconds` until advanced.
    pub fn manual(epoch_seconds: i64) -> Self {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(epoch_seconds))),
        }
    }

    /// Now, in epoch seconds.
    pub fn now(&self) -> i64 {
        match &self.manual {
            Some(t) => t.load(Ordering::SeqCst),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        }
    }

    /// Moves a manual clock forward by `seconds`; does nothing on the system clock.
    pub fn advance(&self, seconds: i64) {
        if let Some(t) = &self.manual {
            t.fetch_add(seconds, Ordering::SeqCst);
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let c = Clock::manual(1_000);
        let c2 = c.clone();
        assert_eq!(c.now(), 1_000);
        c.advance(60);
        assert_eq!(c2.now(), 1_060);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(Clock::system().now() > 1_577_836_800);
    }
}
