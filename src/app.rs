//! Wiring: starts one cutover instance (proxy listener, admin listener,
//! mirror and comparison workers) from a validated config, and stops it in
//! order: stop accepting, finish in-flight requests, drain the mirror queue
//! (all within `[listen] shutdown_grace`), then stop the admin listener.
//!
//! Must never: hold request logic; that lives in proxy and mirror.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::AdminState;
use crate::config::Config;
use crate::metrics::{Metrics, MetricsError};
use crate::mirror::{Evidence, Mirror, MirrorError};
use crate::proxy::{self, ProxyState};
use crate::store::Writer;
use crate::upstream::{Upstream, UpstreamError};
use crate::{admin, server};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{key} = \"{addr}\": cannot listen: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
}

/// What a shutdown left undone (all zero on a clean stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether client connections were still open when the grace period ended.
    pub connections_cut: bool,
    /// Mirrored exchanges not yet recorded when the grace period ended.
    pub exchanges_unrecorded: usize,
    /// Records not written to the store when the grace period ended.
    pub records_unwritten: i64,
}

/// A running instance.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics: Metrics,
    shutdown: watch::Sender<bool>,
    stopped: JoinHandle<ShutdownReport>,
}

impl Running {
    /// Stops the instance gracefully and reports what was left undone.
    pub async fn shutdown(self) -> ShutdownReport {
        let _ = self.shutdown.send(true);
        self.stopped.await.unwrap_or(ShutdownReport {
            connections_cut: true,
            exchanges_unrecorded: 0,
            records_unwritten: 0,
        })
    }
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

/// Starts an instance: both listeners are bound when this returns.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let metrics = Metrics::new()?;
    let primary = Upstream::new(&config.primary)?;
    let shadow = Upstream::new(&config.shadow)?;
    let (writer, writer_task) = Writer::start(config.store.clone(), metrics.clone());
    let (mirror, workers) = Mirror::start(
        config.mirror.clone(),
        config.noise.clone(),
        primary.clone(),
        shadow,
        config.shadow.rate_limit,
        metrics.clone(),
        Evidence {
            writer: Arc::clone(&writer),
            redactor: config.redact.clone(),
            samples_per_group: config.store.options.samples_per_group,
        },
    )?;
    let proxy_listener = bind("listen.proxy", config.listen.proxy).await?;
    let admin_listener = bind("listen.admin", config.listen.admin).await?;
    let proxy_addr = proxy_listener.local_addr().map_err(|source| StartError::Bind {
        key: "listen.proxy",
        addr: config.listen.proxy,
        source,
    })?;
    let admin_addr = admin_listener.local_addr().map_err(|source| StartError::Bind {
        key: "listen.admin",
        addr: config.listen.admin,
        source,
    })?;

    let state = Arc::new(ProxyState {
        routes: config.routes.clone(),
        primary,
        mirror: Arc::clone(&mirror),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let grace = config.listen.shutdown_grace;
    let header_timeout = config.listen.header_read_timeout;

    let proxy_task = tokio::spawn(server::serve(
        proxy_listener,
        move |peer, request| proxy::handle(Arc::clone(&state), peer, request),
        shutdown_rx,
        header_timeout,
        grace,
    ));
    let primary_address = (
        config.primary.url.host_str().unwrap_or_default().to_string(),
        config.primary.url.port_or_known_default().unwrap_or(80),
    );
    let admin_state = Arc::new(AdminState::new(
        metrics.clone(),
        config.admin.token.clone(),
        config.admin.token_env.clone(),
        config.store.url.clone(),
        config.store.options.clone(),
        primary_address,
    ));
    let admin_task = tokio::spawn(server::serve(
        admin_listener,
        move |peer, request| admin::handle(Arc::clone(&admin_state), peer, request),
        admin_stop_rx,
        header_timeout,
        grace,
    ));

    let writer_metrics = metrics.clone();
    let stopped = tokio::spawn(async move {
        let began = Instant::now();
        let finished = proxy_task.await.unwrap_or(false);
        let left = grace.saturating_sub(began.elapsed());
        let exchanges_unrecorded = mirror.drain(left).await;
        mirror.stop();
        drop(mirror);
        if tokio::task::spawn_blocking(move || workers.join()).await.is_err() {
            warn!("comparison workers did not stop cleanly");
        }
        // Everything recorded is queued for the store: write it, within what is left of the grace period.
        writer.stop();
        let store_grace = grace
            .saturating_sub(began.elapsed())
            .max(std::time::Duration::from_secs(1));
        let mut writer_task = writer_task;
        if tokio::time::timeout(store_grace, &mut writer_task).await.is_err() {
            writer_task.abort();
        }
        let records_unwritten = writer_metrics.store_pending().get();
        let _ = admin_stop_tx.send(true);
        let _ = admin_task.await;
        let report = ShutdownReport {
            connections_cut: !finished,
            exchanges_unrecorded,
            records_unwritten,
        };
        if report.connections_cut || report.exchanges_unrecorded > 0 || report.records_unwritten > 0 {
            warn!(
                connections_cut = report.connections_cut,
                exchanges_unrecorded = report.exchanges_unrecorded,
                records_unwritten = report.records_unwritten,
                "shutdown grace period ended with work left"
            );
        } else {
            info!("stopped cleanly");
        }
        report
    });

    Ok(Running {
        proxy_addr,
        admin_addr,
        metrics,
        shutdown: shutdown_tx,
        stopped,
    })
}
