//! Building and running the application: configuration → store → router → listener.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{Config, redact_url_password};
use crate::http::{AppState, router};
use crate::store::Store;

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

/// Opens the configured database and applies pending migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let url = config.database.url.expose();
    let store = Store::connect(url, config.database.max_connections)
        .await
        .with_context(|| format!("cannot open database {}", redact_url_password(url)))?;
    store
        .migrate()
        .await
        .context("cannot apply database migrations")?;
    Ok(store)
}

impl Application {
    /// Binds the listener (port 0 picks a free port, as tests do).
    pub async fn build(config: Config, store: Store) -> anyhow::Result<Self> {
        let is_default = config.agendas_dir == Config::default().agendas_dir;
        let templates = crate::agendas::load(&config.agendas_dir, is_default)?;
        tracing::info!(count = templates.templates.len(), "agenda templates loaded");
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        Ok(Self {
            listener,
            state: AppState::new(store, config, templates),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGTERM or Ctrl-C, then lets requests in flight finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = router(self.state.clone());
        tracing::info!(address = %self.local_addr(), "muster is listening");
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop)
        .await
        .context("HTTP server failed")?;
        self.state.store.close().await;
        tracing::info!("muster stopped");
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}
