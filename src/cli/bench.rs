//! `facepass bench [IMAGE...]`: per-stage timings of the face pipeline, and with `--ops` per
//! operator of both models, as a JSON report.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::FaceConfig;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Images to run on (default: tests/fixtures/photos/*).
    images: Vec<PathBuf>,
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    #[arg(long, default_value = "bench/facepass.json")]
    out: PathBuf,
    /// Also time every operator of both models (one detector pass, one face) and report the
    /// time per operator kind and the slowest nodes.
    #[arg(long)]
    ops: bool,
    /// How many of each model's slowest nodes `--ops` lists (0: every node).
    #[arg(long, default_value_t = 15, requires = "ops")]
    nodes: usize,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = FaceConfig::from_env()?;
    let engine = crate::state::load_engine(&config).await?;
    let images = if args.images.is_empty() {
        let mut found: Vec<PathBuf> = std::fs::read_dir("tests/fixtures/photos")
            .context("no images given and tests/fixtures/photos is missing")?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        found.sort();
        found
    } else {
        args.images
    };
    let mut photos = Vec::new();
    for p in &images {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        photos.push((name, crate::cli::setup::read(p)?));
    }
    let (repeats, ops) = (args.repeats, args.ops.then_some(args.nodes));
    let report = tokio::task::spawn_blocking(move || {
        let single = facepass_face::run_bench(&engine, &photos, repeats, 1)?;
        let dual = facepass_face::run_bench(&engine, &photos, repeats, 2)?;
        let ops = ops
            .map(|nodes| engine.profile_ops(repeats, nodes))
            .transpose()?;
        Ok::<_, facepass_face::FaceError>(
            serde_json::json!({ "threads_1": single, "threads_2": dual, "ops": ops }),
        )
    })
    .await??;
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("report written to {}", args.out.display());
    Ok(())
}
