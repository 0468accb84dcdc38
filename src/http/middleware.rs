//! Cross-cutting HTTP behaviour: request ids, access logs, metrics, security headers, and JSON
//! bodies for errors produced outside our handlers (actix extractors, payload limits).

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{DefaultHeaders, ErrorHandlerResponse, ErrorHandlers, Next};
use actix_web::{HttpMessage, ResponseError};
use tracing::Instrument;

use crate::error::{ApiError, Code};
use crate::metrics;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request, in request extensions for handlers that want it.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Gives each request an id (the caller's `X-Request-Id` when it is sane), runs it inside a span
/// carrying that id, logs one line when it ends and records the route's metrics.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().to_string();
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = tracing::field::Empty);
    let result = next.call(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    match result {
        Ok(mut res) => {
            // The route template, never the raw path: paths carry partner ids.
            let route = res
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned());
            span.record("route", route.as_str());
            let status = res.status().as_u16();
            metrics::record_http(route.clone(), method.clone(), status, elapsed);
            span.in_scope(|| {
                tracing::info!(
                    status,
                    latency_ms = elapsed.as_millis() as u64,
                    "{method} {route} -> {status}"
                )
            });
            if let Ok(v) = HeaderValue::from_str(&id) {
                res.headers_mut().insert(REQUEST_ID, v);
            }
            Ok(res)
        }
        Err(e) => Err(e),
    }
}

/// Headers every response carries. The API serves JSON only; /docs (Swagger UI) needs its own
/// scripts and styles, which `default-src 'self'` allows.
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             script-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ))
}

/// Error responses that did not come from `ApiError` (actix's own 4xx/5xx, payload limits)
/// get the same JSON body as ours.
pub fn json_errors<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        let is_json = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let code = match status.as_u16() {
            400 => Code::BadRequest,
            401 => Code::MissingApiKey,
            404 => Code::NotFound,
            405 => Code::MethodNotAllowed,
            413 => Code::PayloadTooLarge,
            415 => Code::UnsupportedMediaType,
            429 => Code::RateLimited,
            503 => Code::Overloaded,
            s if s < 500 => Code::BadRequest,
            _ => Code::Internal,
        };
        let message = match code {
            Code::Internal => "internal error".to_owned(),
            _ => status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_owned(),
        };
        let (req, old) = res.into_parts();
        let mut new: actix_web::HttpResponse<BoxBody> =
            ApiError::new(code, message).error_response();
        *new.status_mut() = status;
        for (name, value) in old.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                new.headers_mut().insert(name.clone(), value.clone());
            }
        }
        Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(req, new).map_into_right_body(),
        ))
    })
}
