//! `facepass reembed [--model M] [--cleanup]`: re-embed stored photos with another recognition
//! model beside the current faces, then drop the old model's faces (`workflows::reembed`).

use std::path::PathBuf;

use crate::config::Config;
use crate::domain::TenantId;
use crate::workflows::reembed;

#[derive(Debug, clap::Args)]
pub struct ReembedArgs {
    /// The new ArcFace-compatible model (default: FACE_EMBEDDER_MODEL).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Its expected sha256.
    #[arg(long)]
    sha256: Option<String>,
    /// Only this tenant's sessions.
    #[arg(long)]
    tenant: Option<String>,
    /// Instead: delete the faces of every model but this one (after all servers switched).
    #[arg(long)]
    cleanup: bool,
}

pub async fn run(args: ReembedArgs) -> anyhow::Result<()> {
    let mut config = Config::from_env()?;
    if let Some(model) = args.model {
        config.face.embedder_model = model;
        config.face.embedder_sha256 = args.sha256;
    }
    let state = crate::cli::setup::app_state(config).await?;
    if args.cleanup {
        let removed = reembed::cleanup(&state).await?;
        println!(
            "removed {removed} faces of models other than {}",
            state.faces.engine().model_id()
        );
        return Ok(());
    }
    let tenant = args
        .tenant
        .as_deref()
        .map(TenantId::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--tenant {e}"))?;
    let summary = reembed::reembed(&state, tenant.as_ref()).await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    anyhow::ensure!(
        summary.failed.is_empty(),
        "{} photos failed",
        summary.failed.len()
    );
    Ok(())
}
