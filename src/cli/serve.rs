//! `facepass serve` (the default): the HTTP server until SIGINT/SIGTERM.

use crate::config::{Config, LogFormat};
use crate::startup::Application;

pub async fn run() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    crate::telemetry::init(config.app.log_format, config.app.debug);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if config.app.log_format == LogFormat::Pretty && !config.app.debug {
        tracing::debug!("pretty logs; set LOG_FORMAT=json in production");
    }
    let app = Application::build(config.clone()).await?;
    tracing::info!(
        host = %config.app.host,
        port = app.port(),
        version = %config.app.version,
        "FacePass listening"
    );
    app.run_until_stopped().await?;
    tracing::info!("FacePass stopped");
    Ok(())
}
