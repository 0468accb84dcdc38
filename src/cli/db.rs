//! `facepass db stats|reindex`: rows and index sizes, IVFFlat recall, and rebuilding the
//! IVFFlat index. Needs only the database settings.

use clap::Subcommand;

use crate::config::DatabaseConfig;
use crate::store::db::Db;
use crate::store::maintenance;

#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Rows per tenant, index sizes, IVFFlat lists/probes and its estimated recall.
    Stats {
        /// Faces sampled as queries for the recall estimate.
        #[arg(long, default_value_t = 20)]
        sample: usize,
    },
    /// Rebuild the IVFFlat index CONCURRENTLY with lists chosen from the row count.
    Reindex {
        /// Override the number of lists.
        #[arg(long)]
        lists: Option<i64>,
    },
}

pub async fn run(action: DbAction) -> anyhow::Result<()> {
    // Only the database settings: a DBA's machine need not hold the S3 or Redis credentials.
    let config = DatabaseConfig::from_env()?;
    let pool = Db::new(crate::cli::setup::connect(&config).await?, &config);
    match action {
        DbAction::Stats { sample } => {
            let stats = maintenance::stats(&pool, config.ivfflat_probes, sample).await?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
        }
        DbAction::Reindex { lists } => {
            let start = std::time::Instant::now();
            let lists = maintenance::reindex(&pool, lists).await?;
            println!(
                "rebuilt {} with lists = {lists} in {:.1}s",
                maintenance::IVFFLAT_INDEX,
                start.elapsed().as_secs_f64()
            );
        }
    }
    pool.pool().close().await;
    Ok(())
}
