//! Closing a consumer within a time limit. rust-rdkafka's `Drop` closes the consumer and polls
//! until librdkafka says it is closed, without a limit; a stop or a restart must not wait on
//! that for ever (CHAOS.md, finding 16), so the drop runs on a thread of its own and the
//! caller waits for it at most a given time.

use std::sync::mpsc;
use std::time::Duration;

use super::Consumer;

impl Consumer {
    /// Closes the consumer (static members keep their place for a session timeout, as
    /// always) and destroys the client, waiting at most `within`.
    pub fn close(self, within: Duration) {
        let group = self.group.clone();
        let (done_tx, done) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("flumen-consumer-close".into())
            .spawn(move || {
                drop(self);
                done_tx.send(()).ok();
            });
        if let Err(e) = spawned {
            // the closure went with the error, so the consumer was dropped (and closed) here
            tracing::warn!(group = %group, error = %e, "no thread to close the consumer on");
        } else if done.recv_timeout(within).is_err() {
            tracing::warn!(group = %group, within = ?within, "the consumer did not close in time; it goes on closing in the background");
        }
    }
}
