//! The injected clock: every token lifetime, cache expiry and certificate validity reads `now` from here,
//! so tests control time instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::faults::Faults;

/// A source of the current time in epoch seconds, shared by every party of one simulated system.
///
/// `Clock::system()` reads the wall clock; `Clock::manual(t)` starts at `t` and moves only when
/// [`Clock::advance`] or [`Clock::set`] is called (`misim up --clock manual`, the `misim.sim.v1.Clock`
/// gRPC service, tests). Cloning shares the same underlying time, the same change notifications
/// ([`Clock::sleep`] wakes when a manual clock moves) and the same fault registry ([`Clock::faults`]):
/// the clock is the one handle every party of a system already holds.
#[derive(Clone, Debug)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Bumped on every move of a manual clock; sleeping timers watch it.
    moved: watch::Sender<u64>,
    faults: Faults,
    propagation: Propagation,
}

/// Azure's propagation delays of one system, seconds of simulated time (default 0): how long a role
/// assignment takes to affect authorization, and an identity assignment (or removal) to reach IMDS.
/// See <https://learn.microsoft.com/en-us/azure/role-based-access-control/troubleshooting#symptom---role-assignment-changes-are-not-being-detected>
/// and <https://learn.microsoft.com/en-us/entra/identity/managed-identities-azure-resources/managed-identity-best-practice-recommendations#limitation-of-using-managed-identities-for-authorization>.
#[derive(Debug, Default)]
pub struct Propagation {
    role_assignment_secs: AtomicI64,
    identity_secs: AtomicI64,
}

impl Propagation {
    /// Delay before a role assignment (or its deletion) affects ARM's authorization.
    pub fn role_assignment_secs(&self) -> i64 {
        self.role_assignment_secs.load(Ordering::Relaxed)
    }

    /// Delay before an identity assigned to (or removed from) a VM is served (or refused) by IMDS.
    pub fn identity_secs(&self) -> i64 {
        self.identity_secs.load(Ordering::Relaxed)
    }

    /// Sets both delays (negative values count as 0); they apply to changes made from now on.
    pub fn set(&self, role_assignment_secs: i64, identity_secs: i64) {
        self.role_assignment_secs
            .store(role_assignment_secs.max(0), Ordering::Relaxed);
        self.identity_secs
            .store(identity_secs.max(0), Ordering::Relaxed);
    }
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            moved: watch::channel(0).0,
            faults: Faults::default(),
            propagation: Propagation::default(),
        })
    }
}

/// Why a clock could not be moved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClockError {
    /// The system clock cannot be moved (`misim up --clock manual` makes a movable one).
    #[error("the clock is the system clock; start misim with --clock manual to move it")]
    NotManual,
    /// Time does not go backwards: tokens, certificates and keys issued "later" would predate now.
    #[error("the clock cannot move backwards (now {now}, asked {asked})")]
    Backwards {
        /// The current time, epoch seconds.
        now: i64,
        /// The time asked for.
        asked: i64,
    },
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Clock {
            manual: None,
            shared: Shared::new(),
        }
    }

    /// A clock frozen at `epoch_seconds` until advanced.
    pub fn manual(epoch_seconds: i64) -> Self {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(epoch_seconds))),
            shared: Shared::new(),
        }
    }

    /// A manual clock starting at the wall clock's current second.
    pub fn manual_from_now() -> Self {
        Clock::manual(Clock::system().now())
    }

    /// Whether this clock moves only when told.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
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

    /// Moves a manual clock forward by `seconds`; does nothing on the system clock. Timers sleeping
    /// in [`Clock::sleep`] wake.
    pub fn advance(&self, seconds: i64) {
        if let Some(t) = &self.manual {
            t.fetch_add(seconds, Ordering::SeqCst);
            self.shared.moved.send_modify(|n| *n += 1);
        }
    }

    /// Sets a manual clock to `epoch_seconds` (not earlier than now).
    ///
    /// # Errors
    /// [`ClockError::NotManual`] on the system clock, [`ClockError::Backwards`] for a past time.
    pub fn set(&self, epoch_seconds: i64) -> Result<(), ClockError> {
        let t = self.manual.as_ref().ok_or(ClockError::NotManual)?;
        let now = t.load(Ordering::SeqCst);
        if epoch_seconds < now {
            return Err(ClockError::Backwards {
                now,
                asked: epoch_seconds,
            });
        }
        t.store(epoch_seconds, Ordering::SeqCst);
        self.shared.moved.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Sleeps `wall` of real time, or less: returns as soon as a manual clock moves, so a periodic
    /// task (certificate renewal, key rotation) checks the new time at once after an advance.
    pub async fn sleep(&self, wall: Duration) {
        let mut rx = self.shared.moved.subscribe();
        rx.mark_unchanged();
        tokio::select! {
            _ = tokio::time::sleep(wall) => {}
            _ = rx.changed() => {}
        }
    }

    /// A receiver that sees a new value each time a manual clock moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.moved.subscribe()
    }

    /// The fault registry of the system this clock belongs to (see [`crate::faults`]).
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The propagation delays of the system this clock belongs to.
    pub fn propagation(&self) -> &Propagation {
        &self.shared.propagation
    }

    /// `epoch_seconds` as RFC 3339 UTC (`2026-12-01T17:00:00Z`, the `time` crate's formatter); the
    /// Unix epoch when it is outside years 0 to 9999.
    pub fn rfc3339(epoch_seconds: i64) -> String {
        use time::format_description::well_known::Rfc3339;
        time::OffsetDateTime::from_unix_timestamp(epoch_seconds)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
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
    fn rfc3339_is_utc_with_whole_seconds_and_the_epoch_when_out_of_range() {
        assert_eq!(Clock::rfc3339(1_764_608_400), "2025-12-01T17:00:00Z");
        assert_eq!(Clock::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(Clock::rfc3339(i64::MAX), "1970-01-01T00:00:00Z");
        assert_eq!(Clock::rfc3339(-62_167_219_201), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let c = Clock::manual(1_000);
        let c2 = c.clone();
        assert_eq!(c.now(), 1_000);
        c.advance(60);
        assert_eq!(c2.now(), 1_060);
    }

    #[test]
    fn set_refuses_the_past_and_the_system_clock() {
        let c = Clock::manual(1_000);
        assert_eq!(
            c.set(999),
            Err(ClockError::Backwards {
                now: 1_000,
                asked: 999
            })
        );
        c.set(5_000).unwrap();
        assert_eq!(c.now(), 5_000);
        assert_eq!(Clock::system().set(5), Err(ClockError::NotManual));
    }

    #[tokio::test]
    async fn sleep_wakes_when_a_manual_clock_moves() {
        let c = Clock::manual(0);
        let c2 = c.clone();
        let sleeper = tokio::spawn(async move { c2.sleep(Duration::from_secs(3600)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.advance(60);
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woke on advance")
            .unwrap();
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(Clock::system().now() > 1_577_836_800);
    }
}
