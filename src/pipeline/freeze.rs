//! Whether this whole process was frozen: stopped (SIGSTOP), or its VM or container paused.
//! A frozen process loses its group session and its transaction without knowing it; by the
//! time it runs again another instance may have taken its `group.instance.id` and its
//! transactional id over. Its first error after that must not restart it in-process, since
//! the restart's `init_transactions` would fence the new owner back (the chaos suite's zombie
//! restarted so on a flush timeout): the lease is gone, and the process exits instead.
//!
//! A ticker thread wakes every [`TICK`]; a gap between two ticks far longer than that means no
//! thread of the process ran. Busy or blocked pipeline threads do not delay it (2 cores), and
//! a broker outage is not a freeze: the process runs all along.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often the ticker wakes.
const TICK: Duration = Duration::from_millis(100);
/// A gap this long between ticks is a freeze (scheduling delays are milliseconds).
const FREEZE: Duration = Duration::from_secs(1);
/// Freezes remembered (the latest ones; an incarnation asks about its own lifetime).
const KEPT: usize = 16;

struct Ticker {
    origin: Instant,
    /// Milliseconds since `origin` at the last tick.
    last_tick_ms: AtomicU64,
    /// (ended, lasted), in milliseconds since `origin`.
    freezes: Mutex<Vec<(u64, u64)>>,
}

fn ticker() -> &'static Ticker {
    static TICKER: OnceLock<&'static Ticker> = OnceLock::new();
    TICKER.get_or_init(|| {
        let t: &'static Ticker = Box::leak(Box::new(Ticker {
            origin: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            freezes: Mutex::new(Vec::new()),
        }));
        let spawned = std::thread::Builder::new()
            .name("flumen-freeze".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    t.tick();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the freeze ticker: freezes go unnoticed");
        }
        t
    })
}

impl Ticker {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn tick(&self) {
        let now = self.now_ms();
        let gap = now.saturating_sub(self.last_tick_ms.swap(now, Ordering::SeqCst));
        if gap >= ms(FREEZE) {
            tracing::warn!(frozen = ?Duration::from_millis(gap), "this process was frozen (no thread ran)");
            if let Ok(mut f) = self.freezes.lock() {
                if f.len() == KEPT {
                    f.remove(0);
                }
                f.push((now, gap));
            }
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One incarnation's watch: freezes since it began.
pub struct Watch {
    since_ms: u64,
}

impl Watch {
    pub fn start() -> Self {
        let t = ticker();
        Self {
            since_ms: t.now_ms(),
        }
    }

    /// The longest freeze since this watch began (one going on, that the ticker has not yet
    /// woken from, included) if it lasted longer than `limit`.
    pub fn frozen_longer_than(&self, limit: Duration) -> Option<Duration> {
        let t = ticker();
        let freezes = t.freezes.lock().map(|f| f.clone()).unwrap_or_default();
        longest_freeze(
            &freezes,
            self.since_ms,
            t.now_ms(),
            t.last_tick_ms.load(Ordering::SeqCst),
            ms(limit),
        )
        .map(Duration::from_millis)
    }
}

/// The longest of `freezes` (ended, lasted) that ended after `since`, or the gap since the last
/// tick if no tick came since (the ticker not yet woken from a freeze), when above `limit`.
fn longest_freeze(
    freezes: &[(u64, u64)],
    since: u64,
    now: u64,
    last_tick: u64,
    limit: u64,
) -> Option<u64> {
    let ongoing = now.saturating_sub(last_tick.max(since));
    freezes
        .iter()
        .filter(|(ended, _)| *ended > since)
        .map(|(_, lasted)| *lasted)
        .chain(std::iter::once(ongoing))
        .max()
        .filter(|l| *l > limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freeze_counts_against_the_incarnation_it_happened_in() {
        let freezes = [(5_000, 2_000), (60_000, 30_000)];
        // the 30 s freeze ended after the incarnation began at 40 s: above a 10 s session
        assert_eq!(
            longest_freeze(&freezes, 40_000, 61_000, 60_950, 10_000),
            Some(30_000)
        );
        // an incarnation that began after it: none
        assert_eq!(
            longest_freeze(&freezes, 61_000, 70_000, 69_950, 10_000),
            None
        );
        // shorter than the limit: none
        assert_eq!(longest_freeze(&freezes, 0, 61_000, 60_950, 40_000), None);
    }

    #[test]
    fn a_freeze_the_ticker_has_not_woken_from_yet_counts() {
        // no tick for 25 s: the process just resumed, before the ticker ran
        assert_eq!(
            longest_freeze(&[], 0, 100_000, 75_000, 10_000),
            Some(25_000)
        );
        // ... but only the part after the incarnation began
        assert_eq!(longest_freeze(&[], 95_000, 100_000, 75_000, 10_000), None);
    }

    #[test]
    fn the_ticker_sees_a_stopped_process_as_frozen() {
        // a test cannot stop its own process; the ticker's bookkeeping is what it checks
        let t = Ticker {
            origin: Instant::now() - Duration::from_secs(3),
            last_tick_ms: AtomicU64::new(0),
            freezes: Mutex::new(Vec::new()),
        };
        t.tick();
        let f = t.freezes.lock().map(|f| f.clone()).unwrap_or_default();
        assert_eq!(f.len(), 1);
        assert!(f[0].1 >= 3_000);
        t.tick();
        assert_eq!(t.freezes.lock().map(|f| f.len()).unwrap_or_default(), 1);
    }
}
