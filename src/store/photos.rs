//! Photo bytes in S3 (any S3-compatible store: AWS, MinIO, SeaweedFS). Keys are built only from
//! validated ids, never from anything the uploader chose freely.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use s3::creds::Credentials;
use s3::error::S3Error;
use s3::{Bucket, BucketConfiguration, Region};
use secrecy::ExposeSecret;

use crate::config::S3Config;
use crate::domain::{PhotoId, SessionId, TenantId};
use crate::metrics;

#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    #[error("S3 request timed out after {0:?}")]
    Timeout(Duration),
    #[error("S3 object not found")]
    NotFound,
    #[error("S3 error: {0}")]
    S3(#[from] S3Error),
}

pub struct PhotoStore {
    bucket: Box<Bucket>,
    region: Region,
    credentials: Credentials,
    timeout: Duration,
    presign_expiry: Duration,
    bucket_ready: AtomicBool,
    /// Prepended to every key (S3_KEY_PREFIX), so deployments or test runs can share a bucket.
    prefix: String,
}

impl PhotoStore {
    pub fn new(config: &S3Config) -> Result<Self, PhotoError> {
        let region = Region::Custom {
            region: config.region.clone(),
            endpoint: config.endpoint.as_str().trim_end_matches('/').to_owned(),
        };
        let credentials = Credentials::new(
            Some(config.access_key.expose_secret()),
            Some(config.secret_key.expose_secret()),
            None,
            None,
            None,
        )
        .map_err(S3Error::from)?;
        let mut bucket =
            Bucket::new(&config.bucket, region.clone(), credentials.clone())?.with_path_style();
        bucket.set_request_timeout(Some(config.timeout));
        Ok(Self {
            bucket,
            region,
            credentials,
            timeout: config.timeout,
            presign_expiry: config.presign_expiry,
            bucket_ready: AtomicBool::new(false),
            prefix: config.key_prefix.clone(),
        })
    }

    pub fn bucket_name(&self) -> String {
        self.bucket.name()
    }

    /// Where a photo's bytes live. Ids are validated `[A-Za-z0-9_.:-]`, so the key has no
    /// path tricks; the tenant comes first so a tenant's data can be listed or removed at once.
    /// A photo's objects live under this prefix, one per upload (sha256 prefix and a uuid).
    pub fn photo_prefix(&self, tenant: &TenantId, session: &SessionId, photo: &PhotoId) -> String {
        format!("{}photos/{photo}/", self.session_prefix(tenant, session))
    }

    pub fn session_prefix(&self, tenant: &TenantId, session: &SessionId) -> String {
        format!("{}sessions/{session}/", self.tenant_prefix(tenant))
    }

    pub fn tenant_prefix(&self, tenant: &TenantId) -> String {
        format!("{}tenants/{tenant}/", self.prefix)
    }

    /// Everything this deployment stores lives under this prefix.
    pub fn root_prefix(&self) -> String {
        format!("{}tenants/", self.prefix)
    }

    async fn timed<T, F>(&self, operation: &'static str, f: F) -> Result<T, PhotoError>
    where
        F: std::future::Future<Output = Result<T, S3Error>>,
    {
        let start = Instant::now();
        let result = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(S3Error::HttpFailWithBody(404, _))) => Err(PhotoError::NotFound),
            Ok(Err(e)) => Err(PhotoError::S3(e)),
            Err(_) => Err(PhotoError::Timeout(self.timeout)),
        };
        metrics::record_s3_call(operation, start.elapsed(), result.is_ok());
        result
    }

    /// Creates the bucket if it does not exist yet; an existing bucket (409) is fine.
    pub async fn ensure_bucket(&self) -> Result<(), PhotoError> {
        if self.bucket_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        let created = self
            .timed(
                "create_bucket",
                Bucket::create_with_path_style(
                    &self.bucket.name(),
                    self.region.clone(),
                    self.credentials.clone(),
                    BucketConfiguration::default(),
                ),
            )
            .await;
        match created {
            Ok(_) | Err(PhotoError::S3(S3Error::HttpFailWithBody(409, _))) => {
                self.bucket_ready.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Readiness: the bucket exists and our credentials can list it.
    pub async fn check(&self) -> Result<(), PhotoError> {
        self.ensure_bucket().await?;
        self.timed(
            "list",
            self.bucket
                .list_page("health/".to_owned(), None, None, None, Some(1)),
        )
        .await
        .map(|_| ())
    }

    pub async fn put(&self, key: &str, bytes: &[u8], content_type: &str) -> Result<(), PhotoError> {
        self.ensure_bucket().await?;
        self.timed(
            "put",
            self.bucket
                .put_object_with_content_type(key, bytes, content_type),
        )
        .await
        .map(|_| ())
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, PhotoError> {
        self.timed("get", self.bucket.get_object(key))
            .await
            .map(|r| r.to_vec())
    }

    pub async fn exists(&self, key: &str) -> Result<bool, PhotoError> {
        match self.timed("head", self.bucket.head_object(key)).await {
            Ok(_) => Ok(true),
            Err(PhotoError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deleting a missing object is not an error (S3 semantics).
    pub async fn delete(&self, key: &str) -> Result<(), PhotoError> {
        match self.timed("delete", self.bucket.delete_object(key)).await {
            Ok(_) | Err(PhotoError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every key under `prefix` (all pages).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, PhotoError> {
        Ok(self
            .list_with_age(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Every key under `prefix` with its last-modified time (None when unparsable).
    pub async fn list_with_age(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Option<chrono::DateTime<chrono::Utc>>)>, PhotoError> {
        let results = self
            .timed("list", self.bucket.list(prefix.to_owned(), None))
            .await?;
        Ok(results
            .into_iter()
            .flat_map(|page| page.contents.into_iter())
            .map(|o| {
                let modified = chrono::DateTime::parse_from_rfc3339(&o.last_modified)
                    .ok()
                    .map(|t| t.with_timezone(&chrono::Utc));
                (o.key, modified)
            })
            .collect())
    }

    /// A URL that lets its holder GET this one object until it expires.
    pub async fn presign_get(&self, key: &str) -> Result<String, PhotoError> {
        let secs = u32::try_from(self.presign_expiry.as_secs()).unwrap_or(u32::MAX);
        self.timed("presign", self.bucket.presign_get(key, secs.max(1), None))
            .await
    }
}
