//! `facepass eval DIR`: similarity distributions, EER and thresholds on labelled photos
//! (`stats` computes them), printed as tables and optionally written as JSON.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::FaceConfig;

pub mod stats;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    dir: PathBuf,
    /// Also print the threshold that gives this false-accept rate.
    #[arg(long, default_value_t = 0.001)]
    far: f64,
    /// Write the full report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Image files of each identity folder under `dir/identities` (or `dir`), sorted.
fn labelled_images(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let root = if dir.join("identities").is_dir() {
        dir.join("identities")
    } else {
        dir.to_path_buf()
    };
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(&root).with_context(|| format!("cannot read {}", root.display()))?
    {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(entry.path())? {
            let path = file?.path();
            let ext = path
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if matches!(ext.as_str(), "jpg" | "jpeg" | "png" | "webp") {
                out.push((name.clone(), path));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    let (dir, far) = (args.dir.as_path(), args.far);
    let config = FaceConfig::from_env()?;
    let search_threshold = config.similarity_threshold;
    let engine = crate::state::load_engine(&config).await?;
    let images = labelled_images(dir)?;
    anyhow::ensure!(!images.is_empty(), "no images under {}", dir.display());
    let total = images.len();
    let (faces, missed) = tokio::task::spawn_blocking(move || {
        let options = crate::workflows::options::probe_options(&config);
        let mut faces = Vec::new();
        let mut missed = Vec::new();
        for (name, path) in images {
            let found = std::fs::read(&path)
                .ok()
                .and_then(|bytes| engine.analyze(&bytes, &options).ok())
                .and_then(|a| a.faces.into_iter().find_map(|f| f.embedding));
            match found {
                Some(e) => faces.push((name, e)),
                None => missed.push(path.display().to_string()),
            }
        }
        (faces, missed)
    })
    .await?;
    let identity = crate::config::IdentityConfig::from_env()?;
    let (report, impostors) = stats::evaluate(
        total,
        &faces,
        search_threshold.get(),
        identity.verify_threshold.get(),
    );
    print_report(&report, &missed);
    println!(
        "\nthreshold for FAR {far}: {:.4} (photo vs photo)",
        stats::threshold_for(&impostors, far)
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

fn print_report(r: &stats::EvalReport, missed: &[String]) {
    println!(
        "{} images, {} with a face, {} identities",
        r.images, r.faces, r.identities
    );
    for m in missed {
        println!("  no face: {m}");
    }
    for (title, s) in [
        ("photo vs photo", &r.pairs),
        ("template vs probe", &r.template),
    ] {
        println!("\n{title}");
        println!(
            "  {:<9} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
            "", "n", "min", "p1", "p5", "median", "p95", "p99", "max"
        );
        for (label, d) in [("genuine", &s.genuine), ("impostor", &s.impostor)] {
            println!(
                "  {:<9} {:>6} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4}",
                label, d.count, d.min, d.p1, d.p5, d.median, d.p95, d.p99, d.max
            );
        }
        println!(
            "  EER {:.2}% at threshold {:.4}",
            s.eer * 100.0,
            s.eer_threshold
        );
        for a in &s.at_far {
            println!(
                "  FAR {:>6}: threshold {:.4}  TAR {:.2}%{}",
                a.far,
                a.threshold,
                a.tar * 100.0,
                if a.measurable {
                    ""
                } else {
                    "  (too few impostor pairs to measure this FAR)"
                }
            );
        }
    }
}
