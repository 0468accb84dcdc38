//! The OpenAPI document: paths come from the handlers registered in `routes` (one list for both),
//! everything else from here.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "FacePass",
        description = "Self-hosted face search: index event photos into sessions, find a guest's \
                       photos by selfie, enroll and verify identities.\n\nEvery route except \
                       the health routes (v1 and v2), ready and metrics needs an `X-API-Key` \
                       header; the key decides the tenant. An optional `X-Tenant-ID` header \
                       must name that tenant (403 `tenant_mismatch` otherwise, on every route \
                       that takes a key). Errors are JSON `{code, message, type}` with a stable \
                       snake_case `code`; /api/v1 errors are `{detail, code, message}`, with \
                       the code in `detail` too.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ErrorBody)),
    modifiers(&ApiKeyAuth),
    tags(
        (name = "index", description = "Add event photos to a session"),
        (name = "search", description = "Find a session's photos by selfie"),
        (name = "sessions", description = "Session counts and deletion"),
        (name = "photos", description = "Photo metadata and deletion"),
        (name = "identities", description = "Enrollment, 1:1 verification, 1:N identification"),
        (name = "v1", description = "Compatibility with clients of the earlier face-pipeline service"),
        (name = "health", description = "Liveness, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "The tenant's API key. An `X-Tenant-ID` header, when sent, must name the key's \
                 tenant (403 `tenant_mismatch`).",
            ))),
        );
    }
}

pub const SPEC_PATH: &str = "/api/v2/openapi.json";
