//! Building the application: connect, load the models, bind the listener, serve until a
//! signal. The composition root: the one module that imports both `state` and `http`.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use anyhow::Context;
use facepass_face::FaceEngine;

use crate::config::Config;
use crate::state::{load_engine, AppState};
use crate::store::db::Db;

pub struct Application {
    port: u16,
    server: Server,
    db: Db,
}

impl Application {
    /// Connects to everything named in `config`, loads the models and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = Db::connect_lazy(&config.database).context("DATABASE_URL is not usable")?;
        let engine = load_engine(&config.face).await?;
        Self::build_with(config, db, engine).await
    }

    /// Like `build`, with a given database and engine (tests share one engine per process).
    pub async fn build_with(
        config: Config,
        db: Db,
        engine: Arc<FaceEngine>,
    ) -> anyhow::Result<Self> {
        let state = AppState::new(config.clone(), db.clone(), engine).await?;
        let listener = TcpListener::bind((config.app.host, config.app.port))
            .with_context(|| format!("cannot listen on {}:{}", config.app.host, config.app.port))?;
        let port = listener.local_addr()?.port();
        let server = crate::http::server(state, listener, &config)?;
        Ok(Self { port, server, db })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM. On the signal the listener closes at once (new connections
    /// are refused), requests in flight get `SHUTDOWN_TIMEOUT_SECS` to finish, then the
    /// database pool is closed so PostgreSQL sees clean disconnects.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        self.db.pool().close().await;
        tracing::info!("database pool closed");
        served
    }
}
