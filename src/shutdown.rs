//! Shutdown: SIGINT or SIGTERM cancel one `CancellationToken` that every pipeline watches.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGINT or SIGTERM; a second signal is left to the default
/// handler's successor, the deadline in `cli::run`.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => tracing::info!("SIGINT: stopping"),
                    _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                    () = token.cancelled() => return,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; SIGINT only");
                tokio::select! {
                    _ = ctrl_c => tracing::info!("SIGINT: stopping"),
                    () = token.cancelled() => return,
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT: stopping"),
            () = token.cancelled() => return,
        }
    }
    token.cancel();
}
