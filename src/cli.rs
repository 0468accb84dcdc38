//! Command line: what an operator or DBA types. Settings come from the environment (see
//! `.env.example`); flags here only choose what to do.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
        action: MigrateAction,
    },
    /// Check the configuration and print it with secrets redacted.
    Config,
    /// API keys stored in the database (only their hashes are kept).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Detect faces in images and print them as JSON.
    Detect {
        /// Image files (JPEG, PNG, WebP).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Include each face's 512-d embedding.
        #[arg(long)]
        embedding: bool,
    },
    /// Cosine similarity of the largest faces of two images.
    Compare { a: PathBuf, b: PathBuf },
    /// Calibrate thresholds on labelled photos: DIR/identities/<name>/*.jpg (or DIR/<name>/*).
    Eval {
        dir: PathBuf,
        /// Also print the threshold that gives this false-accept rate.
        #[arg(long, default_value_t = 0.001)]
        far: f64,
        /// Write the full report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Time each stage of the face pipeline on images and write a JSON report.
    Bench {
        /// Images to run on (default: tests/fixtures/photos/*).
        images: Vec<PathBuf>,
        #[arg(long, default_value_t = 10)]
        repeats: usize,
        #[arg(long, default_value = "bench/facepass.json")]
        out: PathBuf,
    },
}

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

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key for a tenant and print it once; it cannot be shown again.
    Create {
        #[arg(long)]
        tenant: String,
        /// A note to tell keys apart, e.g. who holds it.
        #[arg(long)]
        label: Option<String>,
    },
    /// Revoke a key by its id (from `keys list`); effective on the next request.
    Revoke { id: uuid::Uuid },
    /// List keys (ids, tenants, prefixes; never the keys).
    List,
}
