//! `facepass migrate up|down|status`: the schema migrations embedded in the binary.

use clap::Subcommand;
use sqlx::migrate::MigrationType;

use crate::config::DatabaseConfig;
use crate::store::db::Db;
use crate::store::migrations;

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply pending migrations (up to --to VERSION).
    Up {
        #[arg(long)]
        to: Option<i64>,
        /// Print the SQL instead of running it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Revert migrations: the newest one, or down to --to VERSION (0 removes everything).
    Down {
        #[arg(long)]
        to: Option<i64>,
        #[arg(long)]
        dry_run: bool,
    },
    /// List migrations and whether each is applied.
    Status,
}

pub async fn run(action: MigrateAction) -> anyhow::Result<()> {
    let config = DatabaseConfig::from_env()?;
    let pool = Db::new(crate::cli::setup::connect(&config).await?, &config);
    match action {
        MigrateAction::Up { to, dry_run: true } => {
            let plan = migrations::plan_up(&pool, to).await?;
            print!(
                "{}",
                migrations::sql_for(&plan, MigrationType::ReversibleUp)
            );
            eprintln!("dry run: {} migration(s) would be applied", plan.len());
        }
        MigrateAction::Up { to, dry_run: false } => {
            let applied = migrations::up(&pool, to).await?;
            if applied.is_empty() {
                println!("schema is up to date (version {})", current(&pool).await?);
            }
            for v in applied {
                println!("applied {v}");
            }
        }
        MigrateAction::Down { to, dry_run } => {
            let to = match to {
                Some(v) => v,
                None => migrations::previous_version(&pool).await?,
            };
            if dry_run {
                let plan = migrations::plan_down(&pool, to).await?;
                print!(
                    "{}",
                    migrations::sql_for(&plan, MigrationType::ReversibleDown)
                );
                eprintln!("dry run: {} migration(s) would be reverted", plan.len());
            } else {
                let reverted = migrations::down(&pool, to).await?;
                if reverted.is_empty() {
                    println!("nothing to revert (version {})", current(&pool).await?);
                }
                for v in reverted {
                    println!("reverted {v}");
                }
            }
        }
        MigrateAction::Status => {
            for m in migrations::status(&pool).await? {
                println!(
                    "{:>4}  {:<9} {:<28} {}{}",
                    m.version,
                    if m.applied { "applied" } else { "pending" },
                    m.description,
                    m.applied_at.unwrap_or_default(),
                    if m.checksum_ok {
                        ""
                    } else {
                        "  CHECKSUM MISMATCH"
                    }
                );
            }
        }
    }
    pool.pool().close().await;
    Ok(())
}

async fn current(pool: &Db) -> anyhow::Result<i64> {
    let latest = migrations::latest_version();
    let pending = migrations::pending(pool).await?;
    Ok(if pending.is_empty() {
        latest
    } else {
        pending[0] - 1
    })
}
