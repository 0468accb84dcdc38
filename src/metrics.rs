//! Prometheus metrics: names as consts with their descriptions, in one place. Labels stay
//! low-cardinality: route templates, status codes, operation names; never ids or keys.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "facepass_http_requests_total";
pub const HTTP_DURATION: &str = "facepass_http_request_duration_seconds";
pub const DB_CALL_DURATION: &str = "facepass_db_call_duration_seconds";
pub const S3_CALL_DURATION: &str = "facepass_s3_call_duration_seconds";
pub const REDIS_CALL_DURATION: &str = "facepass_redis_call_duration_seconds";
pub const DEPENDENCY_ERRORS: &str = "facepass_dependency_errors_total";
pub const INFERENCE_STAGE_DURATION: &str = "facepass_inference_stage_duration_seconds";
pub const INFERENCES_IN_FLIGHT: &str = "facepass_inferences_in_flight";
pub const FACES_INDEXED: &str = "facepass_faces_indexed_total";
pub const PHOTOS_INDEXED: &str = "facepass_photos_indexed_total";
pub const SEARCHES: &str = "facepass_searches_total";
pub const RATE_LIMITED: &str = "facepass_rate_limited_total";
pub const RATE_LIMIT_FALLBACK: &str = "facepass_rate_limit_fallback_total";

// Identity metrics keep the names partners' dashboards already use.
pub const ENROLLMENT_ATTEMPTS: &str = "enrollment_attempts_total";
pub const ENROLLMENT_SUCCESS: &str = "enrollment_success_total";
pub const VERIFICATION_ATTEMPTS: &str = "verification_attempts_total";
pub const VERIFICATION_VERIFIED: &str = "verification_verified_total";
pub const VERIFICATION_SIMILARITY: &str = "verification_similarity_score";
pub const ENROLLMENT_LATENCY: &str = "enrollment_latency_seconds";
pub const VERIFICATION_LATENCY: &str = "verification_latency_seconds";

const SIMILARITY_BUCKETS: &[f64] = &[
    -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0,
];

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once per process (tests start many apps in one process) and
/// returns the handle that renders /metrics.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(VERIFICATION_SIMILARITY.to_owned()),
                        SIMILARITY_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is already installed, e.g. by an embedding program.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status.");
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency by route."
    );
    describe_histogram!(
        DB_CALL_DURATION,
        Unit::Seconds,
        "PostgreSQL call latency by operation."
    );
    describe_histogram!(
        S3_CALL_DURATION,
        Unit::Seconds,
        "S3 call latency by operation."
    );
    describe_histogram!(
        REDIS_CALL_DURATION,
        Unit::Seconds,
        "Redis call latency by operation."
    );
    describe_counter!(
        DEPENDENCY_ERRORS,
        "Failed calls to PostgreSQL, S3 or Redis."
    );
    describe_histogram!(
        INFERENCE_STAGE_DURATION,
        Unit::Seconds,
        "Face engine latency by stage (decode, detect, embed)."
    );
    describe_gauge!(INFERENCES_IN_FLIGHT, "Face engine jobs running or queued.");
    describe_counter!(FACES_INDEXED, "Faces stored by POST /index.");
    describe_counter!(PHOTOS_INDEXED, "Photos stored by POST /index.");
    describe_counter!(SEARCHES, "Selfie searches by outcome.");
    describe_counter!(RATE_LIMITED, "Requests refused with 429 by limiter.");
    describe_counter!(ENROLLMENT_ATTEMPTS, "Identity enrollments requested.");
    describe_counter!(ENROLLMENT_SUCCESS, "Identity enrollments stored.");
    describe_counter!(VERIFICATION_ATTEMPTS, "1:1 verifications requested.");
    describe_counter!(VERIFICATION_VERIFIED, "1:1 verifications that matched.");
    describe_histogram!(
        VERIFICATION_SIMILARITY,
        "Similarity of each 1:1 verification."
    );
    describe_histogram!(ENROLLMENT_LATENCY, Unit::Seconds, "Enrollment latency.");
    describe_histogram!(VERIFICATION_LATENCY, Unit::Seconds, "Verification latency.");
    describe_counter!(
        RATE_LIMIT_FALLBACK,
        "Rate-limit decisions made in-process because Redis was unavailable."
    );
}

fn record_dependency(
    metric: &'static str,
    dependency: &'static str,
    operation: &'static str,
    elapsed: Duration,
    ok: bool,
) {
    histogram!(metric, "operation" => operation).record(elapsed.as_secs_f64());
    if !ok {
        counter!(DEPENDENCY_ERRORS, "dependency" => dependency, "operation" => operation)
            .increment(1);
    }
}

pub fn record_db_call(operation: &'static str, elapsed: Duration, ok: bool) {
    record_dependency(DB_CALL_DURATION, "postgres", operation, elapsed, ok);
}

pub fn record_s3_call(operation: &'static str, elapsed: Duration, ok: bool) {
    record_dependency(S3_CALL_DURATION, "s3", operation, elapsed, ok);
}

pub fn record_redis_call(operation: &'static str, elapsed: Duration, ok: bool) {
    record_dependency(REDIS_CALL_DURATION, "redis", operation, elapsed, ok);
}

pub fn record_http(route: String, method: String, status: u16, elapsed: Duration) {
    counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_DURATION, "route" => route).record(elapsed.as_secs_f64());
}

/// The stage timings of one face-engine run (alignment counts as embedding).
pub fn record_inference(t: &facepass_face::StageTimings) {
    for (stage, ms) in [
        ("decode", t.decode_ms),
        ("detect", t.detect_ms),
        ("embed", t.align_ms + t.embed_ms),
    ] {
        histogram!(INFERENCE_STAGE_DURATION, "stage" => stage).record(ms / 1000.0);
    }
}

pub fn set_inferences_in_flight(n: usize) {
    gauge!(INFERENCES_IN_FLIGHT).set(n as f64);
}
