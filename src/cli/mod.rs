//! The command line: what an operator or DBA types, one file per subcommand, each with its
//! clap arguments and its body. Settings come from the environment (see `.env.example`); flags
//! only choose what to do. Commands call `workflows`, `store` and the engine; `serve` is the one
//! that starts the HTTP server (`startup`).

use clap::{Parser, Subcommand};

pub mod bench;
pub mod compare;
pub mod db;
pub mod detect;
pub mod eval;
pub mod gc;
pub mod index_dir;
pub mod keys;
pub mod loadtest;
pub mod migrate;
pub mod reembed;
pub mod serve;
mod setup;
pub mod show_config;
pub mod smoke;

#[derive(Debug, Parser)]
#[command(name = "facepass", version, about = "Self-hosted face search server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Schema migrations (needs only DATABASE_URL or the POSTGRES_* variables).
    Migrate {
        #[command(subcommand)]
        action: migrate::MigrateAction,
    },
    /// Check the configuration and print it with secrets redacted.
    Config,
    /// API keys stored in the database (only their hashes are kept).
    Keys {
        #[command(subcommand)]
        action: keys::KeysAction,
    },
    /// Detect faces in images and print them as JSON.
    Detect(detect::DetectArgs),
    /// Cosine similarity of the largest faces of two images.
    Compare(compare::CompareArgs),
    /// Calibrate thresholds on labelled photos: DIR/identities/<name>/*.jpg (or DIR/<name>/*).
    Eval(eval::EvalArgs),
    /// Index every image of a folder into a session, as POST /api/v2/index would.
    IndexDir(index_dir::IndexDirArgs),
    /// Re-embed stored photos with another recognition model, beside the current faces
    /// (`reindex` is its old name).
    #[command(alias = "reindex")]
    Reembed(reembed::ReembedArgs),
    /// Find S3 objects without a photo row and photo rows without their object.
    Gc(gc::GcArgs),
    /// Database upkeep (needs only the database settings).
    Db {
        #[command(subcommand)]
        action: db::DbAction,
    },
    /// Run the deployment checklist against a live server; exit code 1 if any check fails.
    Smoke(smoke::SmokeArgs),
    /// A bounded load against a live server: latency percentiles, throughput, errors by code.
    Loadtest(loadtest::LoadtestArgs),
    /// Time each stage of the face pipeline on images and write a JSON report.
    Bench(bench::BenchArgs),
}

impl Command {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Serve => serve::run().await,
            Command::Migrate { action } => migrate::run(action).await,
            Command::Config => show_config::run(),
            Command::Keys { action } => keys::run(action).await,
            Command::Detect(args) => detect::run(args).await,
            Command::Compare(args) => compare::run(args).await,
            Command::Eval(args) => eval::run(args).await,
            Command::IndexDir(args) => index_dir::run(args).await,
            Command::Reembed(args) => reembed::run(args).await,
            Command::Gc(args) => gc::run(args).await,
            Command::Db { action } => db::run(action).await,
            Command::Smoke(args) => smoke::run(args).await,
            Command::Loadtest(args) => loadtest::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    }
}
