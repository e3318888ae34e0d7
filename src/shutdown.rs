//! Shutdown: SIGINT or SIGTERM cancel one `CancellationToken` that every pipeline watches; a
//! second signal cancels `now`, and the daemon exits without waiting for the pipelines.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGINT or SIGTERM, and `now` on the next signal once shutdown
/// began (by a signal, or a pipeline's failure).
pub async fn cancel_on_signal(token: CancellationToken, now: CancellationToken) {
    if first_signal(&token).await {
        token.cancel();
    }
    if second_signal().await {
        tracing::warn!("another signal: exiting now, without waiting for final checkpoints");
        now.cancel();
    }
}

/// Waits for SIGINT or SIGTERM (true), or for `token` to be cancelled otherwise (false).
async fn first_signal(token: &CancellationToken) -> bool {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => tracing::info!("SIGINT: stopping"),
                    _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                    () = token.cancelled() => return false,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; SIGINT only");
                tokio::select! {
                    _ = ctrl_c => tracing::info!("SIGINT: stopping"),
                    () = token.cancelled() => return false,
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT: stopping"),
            () = token.cancelled() => return false,
        }
    }
    true
}

/// Waits for one more SIGINT or SIGTERM; false if none can be listened for.
async fn second_signal() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return tokio::signal::ctrl_c().await.is_ok();
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.is_ok(),
            r = term.recv() => r.is_some(),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.is_ok()
    }
}
