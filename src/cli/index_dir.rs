//! `facepass index-dir DIR --session S`: bulk indexing of a folder with progress; re-running
//! skips what is already there.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;
use crate::domain::{SessionId, TenantId};
use crate::workflows::bulk;

#[derive(Debug, clap::Args)]
pub struct IndexDirArgs {
    dir: PathBuf,
    #[arg(long)]
    session: String,
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Photos in flight at once (default: INFERENCE_WORKERS).
    #[arg(long)]
    parallel: Option<usize>,
}

pub async fn run(args: IndexDirArgs) -> anyhow::Result<()> {
    let session = SessionId::parse(&args.session).map_err(|e| anyhow::anyhow!("--session {e}"))?;
    let tenant = TenantId::parse(&args.tenant).map_err(|e| anyhow::anyhow!("--tenant {e}"))?;
    let files = bulk::images_in(&args.dir)
        .with_context(|| format!("cannot read {}", args.dir.display()))?;
    let state = crate::cli::setup::app_state(Config::from_env()?).await?;
    let parallel = args.parallel.unwrap_or(state.config.face.inference_workers);
    let summary = bulk::index_dir(&state, files, &tenant, &session, parallel).await;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    eprintln!(
        "{} photos: {} indexed ({} faces), {} unchanged, {} failed in {:.1}s",
        summary.photos,
        summary.indexed,
        summary.faces,
        summary.unchanged,
        summary.failed.len(),
        summary.seconds
    );
    anyhow::ensure!(
        summary.failed.is_empty(),
        "{} photos failed",
        summary.failed.len()
    );
    Ok(())
}
