//! What the commands need before they run: a file's bytes, a database pool, the app state.

use std::path::Path;

use anyhow::Context;

use crate::config::{Config, DatabaseConfig};
use crate::state::AppState;
use crate::store::db::{pool_options, Db};

/// A file's bytes, or an error naming it.
pub(super) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A connected pool for the commands that need only the database (migrate, keys, db).
pub(super) async fn connect(config: &DatabaseConfig) -> anyhow::Result<sqlx::PgPool> {
    pool_options(config)
        .connect(config.url())
        .await
        .context("cannot connect to PostgreSQL")
}

/// The full application state, without the HTTP server, for bulk commands: they take the same
/// code paths as the routes.
pub(super) async fn app_state(config: Config) -> anyhow::Result<AppState> {
    crate::telemetry::init(config.app.log_format, config.app.debug);
    let db = Db::connect_lazy(&config.database)?;
    let engine = crate::state::load_engine(&config.face).await?;
    AppState::new(config, db, engine).await
}
