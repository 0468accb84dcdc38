//! `X-API-Key` authentication. A handler that takes a `Tenant` argument needs a valid key; the
//! key decides the tenant, and every query the handler makes is scoped to it.
//!
//! A client may also name its tenant in `X-Tenant-ID` (the earlier face-pipeline's smoke checks
//! send it). The header never chooses the tenant: it is a claim checked against the key's, and a
//! mismatch is refused with 403 `tenant_mismatch` on every authenticated route (v1 and v2), so a
//! client configured with one tenant's id and another's key fails loudly instead of working on
//! the key's data.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use crate::domain::{hash_key, TenantId};
use crate::error::{ApiError, Code};
use crate::state::AppState;
use crate::store::keys;
use actix_web::{web, FromRequest, HttpRequest};

pub const API_KEY_HEADER: &str = "x-api-key";
pub const TENANT_HEADER: &str = "x-tenant-id";

/// The caller, authenticated.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    /// A short, non-secret id of the key (hash prefix), for rate limits and logs.
    pub key_id: String,
}

impl FromRequest for Tenant {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await })
    }
}

async fn authenticate(req: &HttpRequest) -> Result<Tenant, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("AppState missing")))?;
    let peer = req.peer_addr().map(|a| a.ip());
    let presented = req
        .headers()
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let Some(key) = presented else {
        return Err(refuse(
            state,
            peer,
            Code::MissingApiKey,
            "X-API-Key header is required",
        ));
    };
    let hash = hash_key(key);
    let tenant = match state.static_keys.find(&hash) {
        Some(t) => Some(t),
        None => keys::tenant_for(&state.db, &hash)
            .await
            .map_err(|e| ApiError::unavailable(Code::DatabaseUnavailable, e))?,
    };
    let Some(id) = tenant else {
        return Err(refuse(
            state,
            peer,
            Code::InvalidApiKey,
            "the API key is not valid",
        ));
    };
    let tenant = Tenant {
        id,
        key_id: hex::encode(&hash[..8]),
    };
    state.limits.check_key(&tenant.key_id).await?;
    check_claimed_tenant(req, &tenant.id)?;
    Ok(tenant)
}

/// An `X-Tenant-ID` header, when sent, must name the key's tenant. An empty header counts as not
/// sent; a value that is not text cannot match.
fn check_claimed_tenant(req: &HttpRequest, tenant: &TenantId) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(TENANT_HEADER) else {
        return Ok(());
    };
    match value.to_str().map(str::trim) {
        Ok("") => Ok(()),
        Ok(claimed) if claimed == tenant.as_str() => Ok(()),
        _ => Err(tenant_mismatch("X-Tenant-ID")),
    }
}

/// 403 `tenant_mismatch`: a tenant named by the request (`what`) is not the API key's.
pub fn tenant_mismatch(what: &str) -> ApiError {
    ApiError::new(
        Code::TenantMismatch,
        format!("{what} does not match the API key's tenant"),
    )
}

/// A failed attempt: 401, or 429 once this address has failed too often.
fn refuse(state: &AppState, peer: Option<IpAddr>, code: Code, message: &str) -> ApiError {
    if let Some(ip) = peer {
        if let Err(limited) = state.limits.record_auth_failure(ip) {
            return limited;
        }
    }
    ApiError::new(code, message)
}
