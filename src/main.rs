use std::process::ExitCode;

use clap::Parser;

use facepass::cli::{Cli, Command};
use facepass::config::{Config, LogFormat};
use facepass::{commands, startup, telemetry};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (the same in mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Keeps freed memory for reuse instead of handing it back to the system 10 ms after the last
/// free (mimalloc's default): otherwise the face engine's multi-megabyte maps come back from
/// the system on the next photo, page by page. Measured (docs/PERFORMANCE.md): ~24-32 k page
/// faults per `facepass bench` run -> ~1 k, two threads 34.6 -> 36.7-37.0 photos/s, resident
/// memory +2%. `MIMALLOC_PURGE_DELAY` (milliseconds, mimalloc's own variable) still decides
/// when set.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // Safety: mimalloc is this binary's allocator (above); setting an option is allowed at
        // any time.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::Migrate { action } => commands::migrate(action).await,
        Command::Config => commands::show_config(),
        Command::Keys { action } => commands::keys(action).await,
        Command::Detect { images, embedding } => commands::detect(&images, embedding).await,
        Command::Compare { a, b } => commands::compare(&a, &b).await,
        Command::Eval { dir, far, json } => commands::eval(&dir, far, json.as_deref()).await,
        Command::IndexDir {
            dir,
            session,
            tenant,
            parallel,
        } => commands::index_dir(&dir, &session, &tenant, parallel).await,
        Command::Reindex {
            model,
            sha256,
            tenant,
            cleanup,
        } => commands::reindex(model, sha256, tenant.as_deref(), cleanup).await,
        Command::Gc { fix, grace_secs } => commands::gc(fix, grace_secs).await,
        Command::Db { action } => commands::db(action).await,
        Command::Loadtest {
            url,
            api_key,
            endpoint,
            concurrency,
            duration,
            photos,
        } => commands::loadtest(&url, &api_key, endpoint, concurrency, duration, &photos).await,
        Command::Smoke {
            url,
            api_key,
            photos,
        } => commands::smoke(&url, &api_key, &photos).await,
        Command::Bench {
            images,
            repeats,
            out,
            ops,
            nodes,
        } => commands::bench(&images, repeats, &out, ops.then_some(nodes)).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    telemetry::init(config.app.log_format, config.app.debug);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if config.app.log_format == LogFormat::Pretty && !config.app.debug {
        tracing::debug!("pretty logs; set LOG_FORMAT=json in production");
    }
    let app = startup::Application::build(config.clone()).await?;
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
