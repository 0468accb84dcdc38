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
    /// Index every image of a folder into a session, as POST /api/v2/index would.
    IndexDir {
        dir: PathBuf,
        #[arg(long)]
        session: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Photos in flight at once (default: INFERENCE_WORKERS).
        #[arg(long)]
        parallel: Option<usize>,
    },
    /// Re-embed stored photos with another recognition model, beside the current faces.
    Reindex {
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
    },
    /// Find S3 objects without a photo row and photo rows without their object.
    Gc {
        /// Delete orphan objects and rows whose object is missing.
        #[arg(long)]
        fix: bool,
        /// Leave objects younger than this alone (their upload may be committing).
        #[arg(long, default_value_t = 900)]
        grace_secs: u64,
    },
    /// Database upkeep.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Run the deployment checklist against a live server; exit code 1 if any check fails.
    Smoke {
        #[arg(long)]
        url: String,
        #[arg(long, env = "FACEPASS_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Folder with obama.jpg, obama2.jpg, obama3.jpg, 32bit.png and biden.jpg.
        #[arg(long, default_value = "tests/fixtures/photos")]
        photos: PathBuf,
    },
    /// A bounded load against a live server: latency percentiles, throughput, errors by code.
    Loadtest {
        #[arg(long)]
        url: String,
        #[arg(long, env = "FACEPASS_API_KEY", hide_env_values = true)]
        api_key: String,
        #[arg(long, value_enum)]
        endpoint: crate::loadtest::Endpoint,
        #[arg(long, default_value_t = 10)]
        concurrency: usize,
        /// Seconds of load (at most 600).
        #[arg(long, default_value_t = 30)]
        duration: u64,
        #[arg(long, default_value = "tests/fixtures/photos")]
        photos: PathBuf,
    },
    /// Time each stage of the face pipeline on images and write a JSON report.
    Bench {
        /// Images to run on (default: tests/fixtures/photos/*).
        images: Vec<PathBuf>,
        #[arg(long, default_value_t = 10)]
        repeats: usize,
        #[arg(long, default_value = "bench/facepass.json")]
        out: PathBuf,
        /// Also time every operator of both models (one detector pass, one face) and report
        /// the time per operator kind and the slowest nodes.
        #[arg(long)]
        ops: bool,
        /// How many of each model's slowest nodes `--ops` lists (0: every node).
        #[arg(long, default_value_t = 15, requires = "ops")]
        nodes: usize,
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
