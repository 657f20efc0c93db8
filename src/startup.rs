//! Building and running the application: configuration → store → router → listener.

use std::net::SocketAddr;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, redact_url_password};
use crate::http::{AppState, router};
use crate::jobs::{Clock, SystemClock, Worker, WorkerConfig};
use crate::livekit::LiveKit;
use crate::livekit::jobs::RoomJobs;
use crate::notify::handlers::Notifier;
use crate::store::Store;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    workers: Vec<Worker>,
}

/// The job workers the configuration asks for, sending mail through the configured transport.
pub async fn job_workers(
    config: &Config,
    store: &Store,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Vec<Worker>> {
    let notifier = Notifier::new(store.clone(), config, Arc::clone(&clock)).await?;
    let mut handlers = notifier.handlers();
    let livekit = Arc::new(LiveKit::new(&config.livekit));
    handlers.extend(RoomJobs::new(store.clone(), livekit, Arc::clone(&clock)).handlers());
    handlers.insert(
        "followups.sweep".into(),
        crate::followups::sweep_handler(
            store.clone(),
            Arc::clone(&clock),
            config.followups.clone(),
        ),
    );
    store
        .enqueue(&[crate::followups::next_sweep(&config.followups, clock.now())])
        .await?;
    let worker_config = WorkerConfig {
        lease: chrono::Duration::seconds(i64::from(config.jobs.lease_seconds)),
        poll_interval: std::time::Duration::from_millis(u64::from(config.jobs.poll_milliseconds)),
        backoff_base: chrono::Duration::seconds(i64::from(config.jobs.backoff_base_seconds)),
        backoff_max: chrono::Duration::seconds(i64::from(config.jobs.backoff_max_seconds)),
    };
    let host = hostname_or_pid();
    Ok((0..config.jobs.workers.max(1))
        .map(|n| {
            Worker::new(
                store.clone(),
                Arc::clone(&clock),
                handlers.clone(),
                format!("{host}/{n}"),
                worker_config.clone(),
            )
        })
        .collect())
}

/// Identifies this process among instances in job leases.
fn hostname_or_pid() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "muster".into());
    format!("{host}:{}", std::process::id())
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
        let workers = if config.jobs.enabled {
            job_workers(&config, &store, Arc::new(SystemClock)).await?
        } else {
            Vec::new()
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        Ok(Self {
            listener,
            state: AppState::new(store, config, templates),
            workers,
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
        let (stop_workers, worker_stop) = watch::channel(false);
        let workers: Vec<_> = self
            .workers
            .into_iter()
            .map(|w| tokio::spawn(w.run(worker_stop.clone())))
            .collect();
        let shutting_down = Arc::clone(&self.state.shutting_down);
        let stop = async move {
            stop.await;
            let _ = shutting_down.send(true);
        };
        let served = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop)
        .await
        .context("HTTP server failed");
        // Requests in flight have had their answers; apply anything still queued.
        self.state.webhooks.shutdown().await;
        // Let running jobs finish before the pool closes.
        let _ = stop_workers.send(true);
        for worker in workers {
            let _ = worker.await;
        }
        served?;
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
