//! What runs beside the HTTP server: the signal that stops it, the purge, the keyring
//! refresh, and the tidying of what clients could otherwise grow without bound.

use std::time::Duration;

use crate::service::Services;

/// SIGTERM or SIGINT: the senders stop claiming, and the HTTP server drains.
pub(super) async fn stop_on_signal(services: Services, handle: actix_web::dev::ServerHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot listen for SIGTERM and SIGINT; stop the server with its handle");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    tracing::info!("stopping: finishing requests and sends in flight");
    services.delivery.outbox.stop();
    services.events.stop_hooks();
    // Idle relay sessions end with a QUIT now, while the HTTP workers whose sync mints opened
    // some of them still run: a socket is of no use once its worker's runtime has ended
    // (found by the re-audit: every pooled session dropped without QUIT at SIGTERM). Sessions
    // that sends in flight hand back are closed so after the stop (`run_until_stopped`).
    let closed = services.core.mailer.close_all_idle().await;
    if closed > 0 {
        tracing::debug!(closed, "closed idle SMTP connections");
    }
    handle.stop(true).await;
}

/// Keep what clients cannot grow without bound in check (API.md §6.27): the per-IP
/// limiter forgets addresses whose buckets are full again.
pub(super) async fn tidy_loop(governor: crate::routes::governor::IpGovernor) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let limiter = governor.limiter();
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

/// Delete ended codes after `otp.retention_seconds`, and quota records past their windows.
/// Pick up a data-key rotation made by the CLI or another instance within a second or two,
/// so every instance seals new messages and passwords under the active key.
pub(super) async fn keyring_loop(services: Services) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A failure is the operator's to see (a data key this instance's master keys cannot
    // open fails every secret sealed under it): a warning when it starts, then at most one
    // a minute while it lasts, and a line when it ends.
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        match services.core.refresh_keyring().await {
            Ok(reloaded) => {
                if warned.take().is_some() {
                    tracing::info!("keyring refresh works again");
                }
                if reloaded {
                    tracing::info!("keyring reloaded: a new data key is active");
                }
            }
            Err(e) => {
                if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(error = %e, "keyring refresh failed: this instance goes on with the keys it holds (repeated at most once a minute while it lasts)");
                    warned = Some(tokio::time::Instant::now());
                }
            }
        }
    }
}

pub(super) async fn purge_loop(services: Services) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match services.admin.purge_once().await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "purged ended codes"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purge failed"),
        }
    }
}

/// Statistics: count the codes that expired unverified every 15 s (any instance may; each
/// code is counted once), and drop counts past `stats.retention_days` hourly.
pub(super) async fn stats_loop(services: Services) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    let mut last_purge: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        if let Err(e) = services.admin.count_expired().await {
            tracing::warn!(error = %e, "counting expired codes failed");
        }
        if last_purge.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            match services.admin.purge_stats().await {
                Ok(_) => last_purge = Some(tokio::time::Instant::now()),
                Err(e) => tracing::warn!(error = %e, "purging statistics failed"),
            }
        }
    }
}
