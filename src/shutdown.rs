//! Shutdown: the first SIGINT or SIGTERM cancels one `CancellationToken` that every pipeline
//! watches; the next cancels `now`, and the daemon exits without waiting for the pipelines.
//! A shutdown that began otherwise (a pipeline's failure, `flumen stop`) is still graceful at
//! the first signal: only a second one cuts it short.

use tokio_util::sync::CancellationToken;

/// Counts SIGINT and SIGTERM, listened for from the start (no signal is lost between two):
/// the first cancels `token`, the second `now`.
pub async fn cancel_on_signal(token: CancellationToken, now: CancellationToken) {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; SIGINT only");
            Signals::ctrl_c_only()
        }
    };
    let Some(first) = signals.next().await else {
        return;
    };
    tracing::info!("{first}: stopping");
    token.cancel();
    if let Some(second) = signals.next().await {
        tracing::warn!("{second} again: exiting now, without waiting for final checkpoints");
        now.cancel();
    }
}

struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: Some(signal(SignalKind::terminate())?),
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    fn ctrl_c_only() -> Self {
        Self {
            #[cfg(unix)]
            term: None,
        }
    }

    /// The next signal's name; `None` if none can be listened for any more.
    async fn next(&mut self) -> Option<&'static str> {
        #[cfg(unix)]
        if let Some(term) = &mut self.term {
            return tokio::select! {
                r = tokio::signal::ctrl_c() => r.ok().map(|()| "SIGINT"),
                r = term.recv() => r.map(|()| "SIGTERM"),
            };
        }
        tokio::signal::ctrl_c().await.ok().map(|()| "SIGINT")
    }
}
