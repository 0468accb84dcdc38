//! The one place that reads settings. Every setting comes from an environment variable (a `.env`
//! file is loaded first when present); `.env.example` documents each one. Values are checked and
//! turned into real types here, so the rest of the code never parses a string, and every problem
//! is reported at start-up naming the variable.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::domain::{ExternalId, TenantId, Threshold};

#[derive(Debug, Clone)]
pub struct Config {
    pub app: AppConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub s3: S3Config,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub face: FaceConfig,
    pub identity: IdentityConfig,
    pub v1: V1Config,
    /// Settings that were accepted but are ignored or mapped onto ours, one sentence each; the
    /// server logs them at start-up.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    pub version: String,
    pub debug: bool,
    pub host: IpAddr,
    pub port: u16,
    pub log_format: LogFormat,
    pub shutdown_timeout: Duration,
    pub workers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub max_connections: u32,
    /// Applies to acquiring a connection and to each statement.
    pub timeout: Duration,
    /// IVFFlat probes for tenant-wide approximate search (IVFFLAT_PROBES, or the earlier
    /// face-pipeline's VERIFY_HNSW_EF when only that is set).
    pub ivfflat_probes: u32,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: SecretString,
    pub key_prefix: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: Url,
    pub access_key: SecretString,
    pub secret_key: SecretString,
    pub bucket: String,
    /// Prepended to every object key; empty or ending in `/`.
    pub key_prefix: String,
    pub region: String,
    pub timeout: Duration,
    pub presign_expiry: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Keys from `API_KEYS`; keys created with `facepass keys create` live hashed in the database.
    pub static_keys: Vec<StaticKey>,
}

#[derive(Clone)]
pub struct StaticKey {
    pub tenant: TenantId,
    pub key: SecretString,
}

impl fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKey")
            .field("tenant", &self.tenant)
            .field("key", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub cors_origins: Vec<String>,
    pub max_upload_bytes: usize,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub auth_failures_per_minute: u32,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct FaceConfig {
    pub detector_model: PathBuf,
    pub embedder_model: PathBuf,
    /// Expected sha256 of each model file; checked at start-up when set.
    pub detector_sha256: Option<String>,
    pub embedder_sha256: Option<String>,
    pub detector_size: u32,
    pub detection_threshold: Threshold,
    /// PROBE_DETECTION_THRESHOLD: the score a probe's face needs (a selfie, a verification or
    /// enrollment photo); indexing keeps `detection_threshold`.
    pub probe_detection_threshold: Threshold,
    pub similarity_threshold: Threshold,
    pub embedding_dimension: usize,
    pub min_face_px: u32,
    pub max_faces_per_photo: usize,
    pub max_image_pixels: u64,
    pub inference_workers: usize,
    pub inference_queue: usize,
    pub tiling: bool,
    /// Largest image accepted (MAX_UPLOAD_MB).
    pub max_image_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// ENABLE_VERIFICATION_FLOW: false answers 503 `feature_disabled` on identity routes.
    pub enabled: bool,
    pub verify_threshold: Threshold,
    pub min_images: usize,
    pub max_images: usize,
}

/// The /api/v1 compatibility routes, with the earlier face-pipeline's setting names.
#[derive(Debug, Clone)]
pub struct V1Config {
    /// VERIFY_TOP_K: hits `/api/v1/search` returns when the request names no `top_k`, and the
    /// most enrolled faces `/api/v1/verify` lists in `results`.
    pub top_k: i64,
}

/// Every problem found in the environment, each naming its variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    /// Reads `.env` (if present) and the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        load_dotenv()?;
        Self::from_vars(&std::env::vars().collect())
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut v = Vars {
            vars,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let config = Config {
            app: AppConfig {
                name: v.string("APP_NAME", "FacePass"),
                version: v.string("APP_VERSION", env!("CARGO_PKG_VERSION")),
                debug: v.parse("DEBUG", false),
                host: v.parse("HOST", IpAddr::from([127, 0, 0, 1])),
                port: v.parse("PORT", 58080),
                log_format: v.log_format(),
                shutdown_timeout: v.secs("SHUTDOWN_TIMEOUT_SECS", 30),
                workers: v.parse("HTTP_WORKERS", 2),
            },
            database: v.database(),
            redis: RedisConfig {
                url: v.redis_url(),
                key_prefix: v.string("REDIS_KEY_PREFIX", "facepass"),
                timeout: v.secs("REDIS_TIMEOUT_SECS", 2),
            },
            s3: S3Config {
                endpoint: v.parse("S3_ENDPOINT", default_s3_endpoint()),
                access_key: v.secret("S3_ACCESS_KEY"),
                secret_key: v.secret("S3_SECRET_KEY"),
                bucket: v.bucket(),
                key_prefix: v.key_prefix(),
                region: v.string("S3_REGION", "us-east-1"),
                timeout: v.secs("S3_TIMEOUT_SECS", 10),
                presign_expiry: v.secs("S3_PRESIGN_EXPIRY_SECS", 3600),
            },
            auth: AuthConfig {
                static_keys: v.api_keys(),
            },
            http: HttpConfig {
                cors_origins: v.list("CORS_ORIGINS"),
                max_upload_bytes: v
                    .parse::<usize>("MAX_UPLOAD_MB", 15)
                    .saturating_mul(1 << 20),
                rate_limit_per_second: v.positive("RATE_LIMIT_PER_SECOND", 20),
                rate_limit_burst: v.positive("RATE_LIMIT_BURST", 40),
                auth_failures_per_minute: v.positive("AUTH_FAILURES_PER_MINUTE", 30),
                request_timeout: v.secs("REQUEST_TIMEOUT_SECS", 60),
            },
            face: v.face(),
            identity: v.identity(),
            v1: v.v1(),
            // Last: after every other field has been read.
            warnings: std::mem::take(&mut v.warnings),
        };
        if v.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                problems: v.problems,
            })
        }
    }
}

/// Reads one section of the settings from the environment, for commands that need no more.
fn section<T>(read: impl FnOnce(&mut Vars) -> T) -> Result<T, ConfigError> {
    load_dotenv()?;
    let vars = std::env::vars().collect();
    let mut v = Vars {
        vars: &vars,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let value = read(&mut v);
    if v.problems.is_empty() {
        Ok(value)
    } else {
        Err(ConfigError {
            problems: v.problems,
        })
    }
}

impl FaceConfig {
    /// Only the face engine settings: what `facepass detect`, `compare`, `bench` and `eval` need.
    pub fn from_env() -> Result<Self, ConfigError> {
        section(|v| v.face())
    }
}

impl IdentityConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        section(|v| v.identity())
    }
}

impl DatabaseConfig {
    /// Only the database settings: what `facepass migrate` and the DBA scripts need.
    pub fn from_env() -> Result<Self, ConfigError> {
        section(|v| v.database())
    }

    pub fn url(&self) -> &str {
        self.url.expose_secret()
    }

    /// The longest one statement (and one transaction of the request path) may run: a few
    /// calls' worth, since a photo's transaction writes all its faces, and no longer, since a
    /// statement that outlives the request is of no use to anyone.
    pub fn statement_timeout(&self) -> Duration {
        self.timeout * STATEMENT_TIMEOUT_CALLS
    }
}

/// How many DB_TIMEOUT_SECS a statement may run (`DatabaseConfig::statement_timeout`).
pub const STATEMENT_TIMEOUT_CALLS: u32 = 6;

fn load_dotenv() -> Result<(), ConfigError> {
    // A missing .env is normal; a broken one is a start-up error worth seeing.
    match dotenvy::dotenv() {
        Err(e) if !e.not_found() => Err(ConfigError {
            problems: vec![format!(".env: {e}")],
        }),
        _ => Ok(()),
    }
}

/// Reads variables and collects problems instead of stopping at the first one.
struct Vars<'a> {
    vars: &'a HashMap<String, String>,
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl Vars<'_> {
    fn raw(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    fn string(&mut self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or(default).to_owned()
    }

    fn parse<T: FromStr>(&mut self, name: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            None => default,
            Some(s) => match s.parse::<T>() {
                Ok(v) => v,
                Err(e) => {
                    // Never echo the value: the variable might hold a secret by mistake.
                    self.problems
                        .push(format!("{name}: cannot parse value ({e})"));
                    default
                }
            },
        }
    }

    fn positive(&mut self, name: &str, default: u32) -> u32 {
        let v = self.parse(name, default);
        if v == 0 {
            self.problems.push(format!("{name}: must be at least 1"));
            return default;
        }
        v
    }

    fn secs(&mut self, name: &str, default: u64) -> Duration {
        Duration::from_secs(self.parse(name, default))
    }

    fn threshold(&mut self, name: &str, default: f32) -> Threshold {
        let value = self.parse(name, default);
        match Threshold::parse(value) {
            Ok(t) => t,
            Err(e) => {
                self.problems.push(format!("{name}: {e}"));
                Threshold::parse(default).unwrap_or(Threshold::ZERO)
            }
        }
    }

    fn secret(&mut self, name: &str) -> SecretString {
        match self.raw(name) {
            Some(s) => SecretString::from(s.to_owned()),
            None => {
                self.problems.push(format!("{name}: required"));
                SecretString::from(String::new())
            }
        }
    }

    fn list(&mut self, name: &str) -> Vec<String> {
        self.raw(name)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn log_format(&mut self) -> LogFormat {
        match self.raw("LOG_FORMAT").unwrap_or("pretty") {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            _ => {
                self.problems
                    .push("LOG_FORMAT: must be `json` or `pretty`".to_owned());
                LogFormat::Pretty
            }
        }
    }

    fn face(&mut self) -> FaceConfig {
        FaceConfig {
            detector_model: self
                .parse("FACE_DETECTOR_MODEL", "models/scrfd_500m_bnkps.onnx".into()),
            embedder_model: self.parse("FACE_EMBEDDER_MODEL", "models/w600k_mbf.onnx".into()),
            detector_sha256: self.sha256("FACE_DETECTOR_SHA256"),
            embedder_sha256: self.sha256("FACE_EMBEDDER_SHA256"),
            detector_size: self.detector_size(),
            detection_threshold: self.threshold("FACE_DETECTION_THRESHOLD", 0.6),
            probe_detection_threshold: self.threshold("PROBE_DETECTION_THRESHOLD", 0.5),
            similarity_threshold: self
                .threshold("FACE_SIMILARITY_THRESHOLD", DEFAULT_SIMILARITY_THRESHOLD),
            embedding_dimension: self.embedding_dimension(),
            min_face_px: self.parse("MIN_FACE_PX", 24),
            max_faces_per_photo: self.positive("MAX_FACES_PER_PHOTO", 100) as usize,
            max_image_pixels: self
                .parse::<u64>("MAX_IMAGE_MEGAPIXELS", 40)
                .saturating_mul(1_000_000),
            inference_workers: self.positive("INFERENCE_WORKERS", 2) as usize,
            inference_queue: self.parse("INFERENCE_QUEUE", 32),
            tiling: self.parse("FACE_TILING", true),
            max_image_bytes: self.megabytes("MAX_UPLOAD_MB", 15),
        }
    }

    fn identity(&mut self) -> IdentityConfig {
        IdentityConfig {
            enabled: self.parse("ENABLE_VERIFICATION_FLOW", true),
            verify_threshold: self.threshold("VERIFY_HI_THRESHOLD", DEFAULT_VERIFY_THRESHOLD),
            min_images: self.positive("ENROLL_MIN_IMAGES", 3) as usize,
            max_images: self.positive("ENROLL_MAX_IMAGES", 10) as usize,
        }
    }

    fn megabytes(&mut self, name: &str, default: usize) -> usize {
        self.parse::<usize>(name, default).saturating_mul(1 << 20)
    }

    fn database(&mut self) -> DatabaseConfig {
        DatabaseConfig {
            url: self.database_url(),
            max_connections: self.positive("DB_MAX_CONNECTIONS", 10),
            timeout: self.secs("DB_TIMEOUT_SECS", 5),
            ivfflat_probes: self.ivfflat_probes(),
        }
    }

    /// EMBEDDING_DIMENSION, or the earlier face-pipeline's VECTOR_DIM: either way it is checked
    /// against the model's output when the models load.
    fn embedding_dimension(&mut self) -> usize {
        let dim = self.parse("EMBEDDING_DIMENSION", DEFAULT_EMBEDDING_DIMENSION);
        if self.raw("VECTOR_DIM").is_none() {
            return dim;
        }
        let vector_dim = self.parse("VECTOR_DIM", dim);
        if self.raw("EMBEDDING_DIMENSION").is_some() && vector_dim != dim {
            self.problems.push(
                "VECTOR_DIM: differs from EMBEDDING_DIMENSION; set one of them (the model's \
                 output size)"
                    .to_owned(),
            );
            return dim;
        }
        vector_dim
    }

    /// IVFFLAT_PROBES; when only the earlier face-pipeline's VERIFY_HNSW_EF is set, that. Both
    /// say how much of the approximate index one search reads (more: better recall, slower),
    /// though not on the same scale.
    fn ivfflat_probes(&mut self) -> u32 {
        let probes = self.positive("IVFFLAT_PROBES", DEFAULT_IVFFLAT_PROBES);
        if self.raw("VERIFY_HNSW_EF").is_none() {
            return probes;
        }
        let ef = self.positive("VERIFY_HNSW_EF", probes);
        if self.raw("IVFFLAT_PROBES").is_some() {
            self.warnings.push(
                "VERIFY_HNSW_EF is ignored: IVFFLAT_PROBES is set and decides the IVFFlat probes"
                    .to_owned(),
            );
            return probes;
        }
        self.warnings.push(format!(
            "VERIFY_HNSW_EF={ef} is used as IVFFLAT_PROBES (FacePass searches an IVFFlat index, \
             not HNSW); set IVFFLAT_PROBES instead, about the square root of the index's lists"
        ));
        ef
    }

    fn v1(&mut self) -> V1Config {
        if self.raw("IDENTITY_COLLECTION").is_some() {
            self.warnings.push(
                "IDENTITY_COLLECTION is ignored: identities live in the database's `identity` \
                 table, per tenant"
                    .to_owned(),
            );
        }
        let max = MAX_TOP_K;
        let top_k = self.parse("VERIFY_TOP_K", DEFAULT_V1_TOP_K);
        if !(1..=max).contains(&top_k) {
            self.problems
                .push(format!("VERIFY_TOP_K: must be between 1 and {max}"));
            return V1Config {
                top_k: DEFAULT_V1_TOP_K,
            };
        }
        V1Config { top_k }
    }

    /// DATABASE_URL wins; otherwise it is built from the POSTGRES_* variables.
    fn database_url(&mut self) -> SecretString {
        if let Some(url) = self.raw("DATABASE_URL").map(str::to_owned) {
            if Url::parse(&url).is_err() || !url.starts_with("postgres") {
                self.problems
                    .push("DATABASE_URL: must be a postgres:// URL".to_owned());
            }
            return SecretString::from(url);
        }
        let user = self.string("POSTGRES_USER", "facepass");
        let db = self.string("POSTGRES_DB", "facepass");
        let host = self.string("POSTGRES_HOST", "127.0.0.1");
        let port: u16 = self.parse("POSTGRES_PORT", 55432);
        let password = self.raw("POSTGRES_PASSWORD").unwrap_or_default().to_owned();
        let mut url = match Url::parse(&format!("postgres://{host}:{port}/{db}")) {
            Ok(u) => u,
            Err(e) => {
                self.problems.push(format!(
                    "POSTGRES_HOST/POSTGRES_DB: not a valid address ({e})"
                ));
                return SecretString::from(String::new());
            }
        };
        let _ = url.set_username(&user);
        if !password.is_empty() {
            let _ = url.set_password(Some(&password));
        }
        SecretString::from(url.to_string())
    }

    fn redis_url(&mut self) -> SecretString {
        if let Some(url) = self.raw("REDIS_URL").map(str::to_owned) {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                self.problems
                    .push("REDIS_URL: must be a redis:// or rediss:// URL".to_owned());
            }
            return SecretString::from(url);
        }
        let host = self.string("REDIS_HOST", "127.0.0.1");
        let port: u16 = self.parse("REDIS_PORT", 56379);
        let db: u32 = self.parse("REDIS_DB", 0);
        let password = self.raw("REDIS_PASSWORD").map(str::to_owned);
        let mut url = match Url::parse(&format!("redis://{host}:{port}/{db}")) {
            Ok(u) => u,
            Err(e) => {
                self.problems
                    .push(format!("REDIS_HOST: not a valid address ({e})"));
                return SecretString::from(String::new());
            }
        };
        // Percent-encoded, as for PostgreSQL: a password may hold '@', ':', '/' or '#'.
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            let _ = url.set_password(Some(&password));
        }
        SecretString::from(url.to_string())
    }

    fn bucket(&mut self) -> String {
        let bucket = self.string("S3_BUCKET", "facepass");
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            self.problems.push(
                "S3_BUCKET: 3-63 characters of lowercase letters, digits, '-' and '.'".to_owned(),
            );
        }
        bucket
    }

    fn sha256(&mut self, name: &str) -> Option<String> {
        let value = self.raw(name)?.to_ascii_lowercase();
        if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.problems
                .push(format!("{name}: must be 64 hex characters (a sha256)"));
            return None;
        }
        Some(value)
    }

    fn key_prefix(&mut self) -> String {
        let prefix = self.string("S3_KEY_PREFIX", "");
        let valid = prefix.is_empty()
            || (prefix.ends_with('/')
                && !prefix.starts_with('/')
                && !prefix.contains("//")
                && !prefix
                    .split('/')
                    .any(|segment| segment == "." || segment == "..")
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/')));
        if !valid {
            self.problems.push(
                "S3_KEY_PREFIX: empty, or letters, digits, - _ . and / ending in /".to_owned(),
            );
        }
        prefix
    }

    fn detector_size(&mut self) -> u32 {
        let size: u32 = self.parse("FACE_DETECTOR_SIZE", 640);
        if !size.is_multiple_of(32) || !(160..=1920).contains(&size) {
            self.problems
                .push("FACE_DETECTOR_SIZE: a multiple of 32 between 160 and 1920".to_owned());
            return 640;
        }
        size
    }

    /// `API_KEYS=tenant_a:key1,tenant_b:key2`.
    fn api_keys(&mut self) -> Vec<StaticKey> {
        let Some(raw) = self.raw("API_KEYS").map(str::to_owned) else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        for (i, pair) in raw
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let Some((tenant, key)) = pair.split_once(':') else {
                self.problems
                    .push(format!("API_KEYS: entry {} is not `tenant:key`", i + 1));
                continue;
            };
            let tenant = match ExternalId::parse(tenant.trim()) {
                Ok(t) => TenantId::from(t),
                Err(e) => {
                    self.problems
                        .push(format!("API_KEYS: entry {}: tenant {e}", i + 1));
                    continue;
                }
            };
            if key.trim().len() < MIN_API_KEY_LEN {
                self.problems.push(format!(
                    "API_KEYS: entry {}: keys need at least {MIN_API_KEY_LEN} characters",
                    i + 1
                ));
                continue;
            }
            keys.push(StaticKey {
                tenant,
                key: SecretString::from(key.trim().to_owned()),
            });
        }
        keys
    }
}

/// See docs/THRESHOLDS.md for how these were measured.
pub const DEFAULT_SIMILARITY_THRESHOLD: f32 = 0.40;
pub const DEFAULT_VERIFY_THRESHOLD: f32 = 0.45;

fn default_s3_endpoint() -> Url {
    #[allow(clippy::expect_used)] // a literal that is known to parse
    Url::parse("http://127.0.0.1:58333").expect("literal URL parses")
}

pub const DEFAULT_EMBEDDING_DIMENSION: usize = 512;
pub const DEFAULT_IVFFLAT_PROBES: u32 = 10;
/// The earlier face-pipeline's VERIFY_TOP_K default.
pub const DEFAULT_V1_TOP_K: i64 = 50;

/// The most results one search returns (v2 session search, v1 tenant search).
pub const MAX_TOP_K: i64 = 1000;

/// Short keys can be guessed; generated keys are much longer.
pub const MIN_API_KEY_LEN: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = [("S3_ACCESS_KEY", "ak"), ("S3_SECRET_KEY", "sk")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    #[test]
    fn a_redis_password_with_reserved_characters_survives_in_the_url() {
        use redis::IntoConnectionInfo;
        let password = "p@ss:w/rd#1?";
        let config = Config::from_vars(&vars(&[("REDIS_PASSWORD", password)])).expect("config");
        let info = config
            .redis
            .url
            .expose_secret()
            .into_connection_info()
            .expect("Redis reads the URL");
        assert_eq!(info.redis_settings().password(), Some(password));
        assert_eq!(info.addr().to_string(), "127.0.0.1:56379");
    }

    /// `.env.example` is what operators copy: its values must all be valid, and it must name
    /// every variable this module reads.
    #[test]
    fn env_example_is_valid_and_complete() {
        let example = include_str!("../.env.example");
        let mut vars = HashMap::new();
        let mut documented = std::collections::HashSet::new();
        for line in example.lines() {
            let line = line.trim_start_matches('#').trim();
            if let Some((k, v)) = line.split_once('=') {
                if k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    documented.insert(k.to_owned());
                    if !example.contains(&format!("\n# {k}=")) && !v.is_empty() {
                        vars.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
        }
        Config::from_vars(&vars).expect(".env.example values are valid");
        let source = include_str!("config.rs");
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        for read in code.split('"').skip(1).step_by(2) {
            let is_var = read.len() > 2
                && read
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && read.contains('_')
                && !read.starts_with("CARGO_");
            if is_var {
                assert!(
                    documented.contains(read),
                    "{read} is read but not in .env.example"
                );
            }
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_vars(&vars(&[])).expect("defaults");
        assert_eq!(c.app.port, 58080);
        assert_eq!(c.face.embedding_dimension, 512);
        assert!((c.face.similarity_threshold.get() - DEFAULT_SIMILARITY_THRESHOLD).abs() < 1e-6);
        assert!((c.identity.verify_threshold.get() - DEFAULT_VERIFY_THRESHOLD).abs() < 1e-6);
        assert_eq!(c.http.max_upload_bytes, 15 << 20);
    }

    #[test]
    fn each_bad_value_is_reported_with_its_variable_name() {
        let cases = [
            ("PORT", "eighty", "PORT"),
            ("PORT", "70000", "PORT"),
            (
                "FACE_SIMILARITY_THRESHOLD",
                "1.5",
                "FACE_SIMILARITY_THRESHOLD",
            ),
            (
                "FACE_DETECTION_THRESHOLD",
                "NaN",
                "FACE_DETECTION_THRESHOLD",
            ),
            (
                "PROBE_DETECTION_THRESHOLD",
                "1.2",
                "PROBE_DETECTION_THRESHOLD",
            ),
            ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
            ("REDIS_URL", "http://x", "REDIS_URL"),
            ("S3_ENDPOINT", "not a url", "S3_ENDPOINT"),
            ("S3_BUCKET", "Bad_Bucket", "S3_BUCKET"),
            ("S3_KEY_PREFIX", "no-slash", "S3_KEY_PREFIX"),
            ("S3_KEY_PREFIX", "../x/", "S3_KEY_PREFIX"),
            ("API_KEYS", "no-colon-here", "API_KEYS"),
            ("API_KEYS", "tenant:short", "API_KEYS"),
            ("API_KEYS", "bad tenant:0123456789abcdef", "API_KEYS"),
            ("FACE_DETECTOR_SIZE", "100", "FACE_DETECTOR_SIZE"),
            ("LOG_FORMAT", "xml", "LOG_FORMAT"),
            ("DEBUG", "maybe", "DEBUG"),
            ("INFERENCE_WORKERS", "0", "INFERENCE_WORKERS"),
            ("VERIFY_TOP_K", "0", "VERIFY_TOP_K"),
            ("VERIFY_TOP_K", "10000", "VERIFY_TOP_K"),
            ("VERIFY_HNSW_EF", "0", "VERIFY_HNSW_EF"),
            ("VECTOR_DIM", "many", "VECTOR_DIM"),
        ];
        for (name, value, expected) in cases {
            let err = Config::from_vars(&vars(&[(name, value)])).expect_err(name);
            let text = err.to_string();
            assert!(text.contains(expected), "{name}={value}: {text}");
        }
    }

    #[test]
    fn missing_s3_credentials_are_named() {
        let err = Config::from_vars(&HashMap::new()).expect_err("no creds");
        let text = err.to_string();
        assert!(
            text.contains("S3_ACCESS_KEY") && text.contains("S3_SECRET_KEY"),
            "{text}"
        );
    }

    #[test]
    fn errors_never_echo_secret_values() {
        let err =
            Config::from_vars(&vars(&[("API_KEYS", "t:tooshort-secret")])).expect_err("short");
        assert!(!err.to_string().contains("tooshort-secret"));
        let err = Config::from_vars(&vars(&[("PORT", "hunter2")])).expect_err("port");
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn database_url_is_built_from_postgres_vars() {
        let c = Config::from_vars(&vars(&[
            ("POSTGRES_USER", "u"),
            ("POSTGRES_PASSWORD", "p@ss"),
            ("POSTGRES_HOST", "db.local"),
            ("POSTGRES_PORT", "6543"),
            ("POSTGRES_DB", "faces"),
        ]))
        .expect("config");
        assert_eq!(c.database.url(), "postgres://u:p%40ss@db.local:6543/faces");
    }

    #[test]
    fn face_pipeline_settings_are_mapped_or_reported_as_ignored() {
        let c = Config::from_vars(&vars(&[])).expect("defaults");
        assert_eq!(c.v1.top_k, DEFAULT_V1_TOP_K);
        assert_eq!(c.database.ivfflat_probes, DEFAULT_IVFFLAT_PROBES);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        let c = Config::from_vars(&vars(&[
            ("VERIFY_TOP_K", "20"),
            ("VERIFY_HNSW_EF", "32"),
            ("VECTOR_DIM", "512"),
            ("IDENTITY_COLLECTION", "faces_v1"),
        ]))
        .expect("config");
        assert_eq!(c.v1.top_k, 20);
        assert_eq!(c.database.ivfflat_probes, 32);
        assert_eq!(c.face.embedding_dimension, 512);
        let warned = c.warnings.join("\n");
        assert!(warned.contains("VERIFY_HNSW_EF"), "{warned}");
        assert!(
            warned.contains("IDENTITY_COLLECTION is ignored"),
            "{warned}"
        );
        assert!(
            !warned.contains("faces_v1"),
            "values are not echoed: {warned}"
        );

        // VECTOR_DIM alone sets the dimension the model must produce.
        let c = Config::from_vars(&vars(&[("VECTOR_DIM", "128")])).expect("config");
        assert_eq!(c.face.embedding_dimension, 128);

        // Our own name wins, and says so.
        let c = Config::from_vars(&vars(&[("IVFFLAT_PROBES", "7"), ("VERIFY_HNSW_EF", "64")]))
            .expect("config");
        assert_eq!(c.database.ivfflat_probes, 7);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with("VERIFY_HNSW_EF is ignored")),
            "{:?}",
            c.warnings
        );

        let err = Config::from_vars(&vars(&[
            ("VECTOR_DIM", "128"),
            ("EMBEDDING_DIMENSION", "512"),
        ]))
        .expect_err("conflict");
        assert!(err.to_string().contains("VECTOR_DIM"), "{err}");
    }

    #[test]
    fn api_keys_parse_into_tenants() {
        let c = Config::from_vars(&vars(&[(
            "API_KEYS",
            "acme:0123456789abcdef0123, globex:fedcba9876543210fedc",
        )]))
        .expect("config");
        let tenants: Vec<_> = c
            .auth
            .static_keys
            .iter()
            .map(|k| k.tenant.as_str())
            .collect();
        assert_eq!(tenants, ["acme", "globex"]);
        assert!(!format!("{:?}", c.auth).contains("0123456789abcdef"));
    }
}
