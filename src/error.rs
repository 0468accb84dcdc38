//! The one error type at the HTTP edge. Every failure a client can see has a stable snake_case
//! `Code`; one table below fixes its status and type. Codes are never renamed once shipped.

use std::fmt;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

macro_rules! codes {
    ($($variant:ident => $code:literal, $kind:ident, $status:ident;)*) => {
        /// Stable machine-readable error codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            pub fn kind(self) -> ErrorKind {
                match self {
                    $(Code::$variant => ErrorKind::$kind,)*
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(Code::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

codes! {
    BadRequest              => "bad_request",              InvalidRequest, BAD_REQUEST;
    InvalidField            => "invalid_field",            InvalidRequest, UNPROCESSABLE_ENTITY;
    MissingField            => "missing_field",            InvalidRequest, UNPROCESSABLE_ENTITY;
    MissingApiKey           => "missing_api_key",          Auth,           UNAUTHORIZED;
    InvalidApiKey           => "invalid_api_key",          Auth,           UNAUTHORIZED;
    TenantMismatch          => "tenant_mismatch",          Auth,           FORBIDDEN;
    NotFound                => "not_found",                InvalidRequest, NOT_FOUND;
    SessionNotFound         => "session_not_found",        InvalidRequest, NOT_FOUND;
    PhotoNotFound           => "photo_not_found",          InvalidRequest, NOT_FOUND;
    IdentityNotEnrolled     => "identity_not_enrolled",    InvalidRequest, NOT_FOUND;
    MethodNotAllowed        => "method_not_allowed",       InvalidRequest, METHOD_NOT_ALLOWED;
    Conflict                => "conflict",                 InvalidRequest, CONFLICT;
    PayloadTooLarge         => "payload_too_large",        InvalidRequest, PAYLOAD_TOO_LARGE;
    UnsupportedMediaType    => "unsupported_media_type",   InvalidRequest, UNSUPPORTED_MEDIA_TYPE;
    InvalidImage            => "invalid_image",            InvalidRequest, UNPROCESSABLE_ENTITY;
    ImageTooLarge           => "image_too_large",          InvalidRequest, UNPROCESSABLE_ENTITY;
    NoFaceDetected          => "no_face_detected",         InvalidRequest, UNPROCESSABLE_ENTITY;
    NotEnoughImages         => "not_enough_images",        InvalidRequest, UNPROCESSABLE_ENTITY;
    TooManySelfies          => "too_many_selfies",         InvalidRequest, UNPROCESSABLE_ENTITY;
    RateLimited             => "rate_limited",             RateLimit,      TOO_MANY_REQUESTS;
    Overloaded              => "overloaded",               Unavailable,    SERVICE_UNAVAILABLE;
    DatabaseUnavailable     => "database_unavailable",     Unavailable,    SERVICE_UNAVAILABLE;
    StorageUnavailable      => "storage_unavailable",      Unavailable,    SERVICE_UNAVAILABLE;
    FeatureDisabled         => "feature_disabled",         Unavailable,    SERVICE_UNAVAILABLE;
    Internal                => "internal",                 Internal,       INTERNAL_SERVER_ERROR;
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Broad family of an error, for clients that branch on kind rather than code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    InvalidRequest,
    Auth,
    RateLimit,
    Unavailable,
    Internal,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"code": "session_not_found", "message": "session `party-42` not found", "type": "invalid_request"}))]
pub struct ErrorBody {
    /// Stable snake_case error code.
    pub code: &'static str,
    /// Human-readable explanation; wording may change, `code` does not.
    pub message: String,
    /// Error family: invalid_request, auth, rate_limit, unavailable, internal.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: ErrorKind,
}

/// An error on its way to the client. `source` is logged, never sent.
pub struct ApiError {
    code: Code,
    message: String,
    source: Option<anyhow::Error>,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            source: None,
            retry_after_secs: None,
        }
    }

    /// An unexpected failure: the cause chain is logged and the client only learns that
    /// something went wrong.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        Self {
            code: Code::Internal,
            message: "internal error".to_owned(),
            source: Some(source.into()),
            retry_after_secs: None,
        }
    }

    /// A dependency (database, storage) failed; the client gets a 503 with `code`.
    pub fn unavailable(code: Code, source: impl Into<anyhow::Error>) -> Self {
        let message = match code {
            Code::DatabaseUnavailable => "the database is unavailable, retry later",
            Code::StorageUnavailable => "photo storage is unavailable, retry later",
            _ => "a dependency is unavailable, retry later",
        };
        Self {
            code,
            message: message.to_owned(),
            source: Some(source.into()),
            retry_after_secs: Some(1),
        }
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.as_str(),
            message: self.message.clone(),
            kind: self.code.kind(),
        }
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source:#}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(source) = &self.source {
            // `{:#}` prints the whole anyhow chain on one line.
            if self.code == Code::Internal {
                tracing::error!(code = %self.code, error = format!("{source:#}"), "request failed");
            } else {
                tracing::warn!(code = %self.code, error = format!("{source:#}"), "request failed");
            }
        }
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(self.body())
    }
}

/// Plain constructors for the common client errors.
impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, message)
    }

    pub fn invalid_field(field: &str, problem: impl fmt::Display) -> Self {
        Self::new(Code::InvalidField, format!("`{field}` {problem}"))
    }

    pub fn missing_field(field: &str) -> Self {
        Self::new(Code::MissingField, format!("`{field}` is required"))
    }
}

/// Whether a database error means "PostgreSQL is not reachable right now" (503, retry) rather
/// than a bug (500).
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    ) || matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| {
        // admin_shutdown, crash_shutdown, cannot_connect_now, query_canceled (statement timeout)
        matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "57014")
    }))
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if is_connection_error(&e) {
            ApiError::unavailable(Code::DatabaseUnavailable, e)
        } else {
            ApiError::internal(e)
        }
    }
}

impl From<crate::store::photos::PhotoError> for ApiError {
    fn from(e: crate::store::photos::PhotoError) -> Self {
        ApiError::unavailable(Code::StorageUnavailable, e)
    }
}

impl From<facepass_face::FaceError> for ApiError {
    fn from(e: facepass_face::FaceError) -> Self {
        use facepass_face::FaceError as F;
        match e {
            F::InvalidImage(_) | F::InvalidEmbedding(_) => {
                ApiError::new(Code::InvalidImage, e.to_string())
            }
            F::UnsupportedFormat(_) => ApiError::new(Code::UnsupportedMediaType, e.to_string()),
            F::ImageTooLarge { .. } => ApiError::new(Code::ImageTooLarge, e.to_string()),
            F::PayloadTooLarge { .. } => ApiError::new(Code::PayloadTooLarge, e.to_string()),
            F::Overloaded => {
                ApiError::new(Code::Overloaded, "the face engine is busy, retry shortly")
                    .with_retry_after(1)
            }
            F::ModelLoad { .. }
            | F::ModelChecksum { .. }
            | F::InvalidConfig(_)
            | F::Inference(_)
            | F::Internal(_) => ApiError::internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate {s}");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::internal(anyhow::anyhow!("password=hunter2 at db.internal:5432"));
        assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_string(&err.body()).expect("serialise");
        assert!(
            !body.contains("hunter2") && !body.contains("db.internal"),
            "{body}"
        );
        assert!(body.contains("\"code\":\"internal\""), "{body}");
    }

    #[test]
    fn unavailable_errors_are_503_with_retry_after() {
        let err = ApiError::unavailable(Code::DatabaseUnavailable, anyhow::anyhow!("refused"));
        let resp = err.error_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }
}
