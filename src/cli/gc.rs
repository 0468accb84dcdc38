//! `facepass gc [--fix]`: S3 objects without rows and rows without objects.

use std::time::Duration;

use crate::config::Config;
use crate::workflows::gc;

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Delete orphan objects and rows whose object is missing.
    #[arg(long)]
    fix: bool,
    /// Leave objects younger than this alone (their upload may be committing).
    #[arg(long, default_value_t = 900)]
    grace_secs: u64,
}

pub async fn run(args: GcArgs) -> anyhow::Result<()> {
    let fix = args.fix;
    let state = crate::cli::setup::app_state(Config::from_env()?).await?;
    let report = gc::run(&state, fix, Duration::from_secs(args.grace_secs)).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!(
        "{} objects, {} photo rows: {} orphan objects, {} rows without their object{}",
        report.objects,
        report.photo_rows,
        report.orphan_objects.len(),
        report.missing_objects.len(),
        if fix {
            " (fixed)"
        } else {
            "; run with --fix to repair"
        }
    );
    Ok(())
}
