//! `facepass compare A B`: cosine similarity of the largest faces of two images.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::FaceConfig;

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    a: PathBuf,
    b: PathBuf,
}

pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    let config = FaceConfig::from_env()?;
    let engine = crate::state::load_engine(&config).await?;
    let options = crate::workflows::options::probe_options(&config);
    let mut embeddings = Vec::new();
    for path in [&args.a, &args.b] {
        let analysis = engine.analyze(&crate::cli::setup::read(path)?, &options)?;
        let embedding = analysis
            .faces
            .into_iter()
            .find_map(|f| f.embedding)
            .with_context(|| format!("no face found in {}", path.display()))?;
        embeddings.push(embedding);
    }
    let similarity = embeddings[0].cosine(&embeddings[1]);
    let threshold = config.similarity_threshold.get();
    println!(
        "{}",
        serde_json::json!({
            "similarity": similarity,
            "threshold": threshold,
            "same_person": similarity >= threshold,
        })
    );
    Ok(())
}
