//! A transactional call that may never return, run on a thread of its own and waited for
//! within Flumen's own limit.
//!
//! librdkafka's `send_offsets_to_transaction` sends `TxnOffsetCommit` as a coordinator
//! request, whose timeout librdkafka never checks. When the group coordinator is lost (a
//! broker killed, or one dropped from the metadata), the call waits without a limit, whatever
//! timeout it is given: librdkafka issues #5456 and #5511, and CHAOS.md's finding 15 (the
//! pipeline thread's stack in the cluster runs). Nothing can be called on a producer whose
//! transactional call is still running, so on expiry the producer is given up: the call's
//! thread keeps it (and drops it if the call ever returns), and the pipeline restarts with a
//! new producer whose `init_transactions` fences this one and aborts its open transaction,
//! which was never committed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rdkafka::error::KafkaResult;

use super::super::{Error, Result, client};

/// How much longer than the time librdkafka was given a call may take before it is held to
/// be stuck (librdkafka reports its own timeouts first).
pub(super) const GRACE: Duration = Duration::from_secs(2);

/// Past this many calls still running in one process when one is given up (each stuck one
/// holds a producer and its threads), that one is fatal: the daemon exits and a supervisor
/// starts a fresh process.
pub const MAX_STUCK: usize = 8;

/// Calls running on their own threads: the ones in progress and the ones given up as stuck
/// that have not returned since.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Calls running on their own threads now (in progress, or given up as stuck).
fn running() -> usize {
    RUNNING.load(Ordering::Acquire)
}

/// Runs `call` with `client` on a thread of its own, waiting at most `limit` + [`GRACE`].
/// `Error::Stuck` when it has not returned by then: `client` stays with the call, and goes
/// when it returns.
pub(super) fn call<C, T>(
    handle: &Arc<C>,
    op: &'static str,
    limit: Duration,
    call: impl FnOnce(&C) -> KafkaResult<T> + Send + 'static,
) -> Result<T>
where
    C: Send + Sync + 'static,
    T: Send + 'static,
{
    let (done_tx, done) = mpsc::sync_channel(1);
    let held = Arc::clone(handle);
    RUNNING.fetch_add(1, Ordering::AcqRel);
    let spawned = std::thread::Builder::new()
        .name(format!("flumen-{op}"))
        .spawn(move || {
            let outcome = call(&held);
            RUNNING.fetch_sub(1, Ordering::AcqRel);
            if done_tx.send(outcome).is_err() {
                tracing::info!(
                    op,
                    "a transactional call given up as stuck returned at last; its producer goes"
                );
            }
            drop(held);
        });
    if let Err(e) = spawned {
        // out of threads: the call was never made, and the restart this error leads to is
        // what a stuck call would need too
        RUNNING.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(op, error = %e, "no thread for a transactional call");
        return Err(Error::Stuck {
            op,
            after: Duration::ZERO,
            running: running(),
        });
    }
    let waited = limit + GRACE;
    match done.recv_timeout(waited) {
        Ok(outcome) => outcome.map_err(client(op)),
        Err(_) => Err(Error::Stuck {
            op,
            after: waited,
            running: running(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_call_that_returns_in_time_gives_its_outcome_and_one_that_does_not_is_given_up() {
        let handle = Arc::new(7_u32);
        let quick = call(&handle, "quick", Duration::ZERO, |h| Ok(*h + 1));
        assert_eq!(quick.ok(), Some(8));

        let (release, held) = mpsc::channel::<()>();
        let began = Instant::now();
        let stuck = call(&handle, "held", Duration::ZERO, move |h| {
            held.recv().ok();
            Ok(*h)
        });
        let waited = began.elapsed();
        match stuck {
            Err(Error::Stuck { op, after, running }) => {
                assert_eq!((op, after), ("held", GRACE));
                assert!(running >= 1, "{running}");
            }
            other => panic!("not given up: {other:?}"),
        }
        assert!(waited >= GRACE, "{waited:?}");
        // the handle stays with the call until it returns
        assert_eq!(Arc::strong_count(&handle), 2);
        release.send(()).ok();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&handle) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(Arc::strong_count(&handle), 1);
    }
}
