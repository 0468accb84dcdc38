//! `facepass detect IMAGE...`: the faces indexing would store, as JSON.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::FaceConfig;

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// Image files (JPEG, PNG, WebP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Include each face's 512-d embedding.
    #[arg(long)]
    embedding: bool,
}

pub async fn run(args: DetectArgs) -> anyhow::Result<()> {
    let config = FaceConfig::from_env()?;
    let engine = crate::state::load_engine(&config).await?;
    // The faces indexing would store, with or without their embeddings.
    let options = facepass_face::AnalyzeOptions {
        embed: args.embedding,
        ..crate::workflows::options::indexing_options(&config)
    };
    let mut out = Vec::new();
    for path in &args.images {
        let bytes = crate::cli::setup::read(path)?;
        let analysis = engine
            .analyze(&bytes, &options)
            .with_context(|| format!("{}", path.display()))?;
        out.push(serde_json::json!({ "file": path.display().to_string(), "analysis": analysis }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
