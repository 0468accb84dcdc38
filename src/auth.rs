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

use actix_web::{web, FromRequest, HttpRequest};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;
use crate::domain::TenantId;
use crate::error::{ApiError, Code};
use crate::startup::AppState;
use crate::store::keys;

pub const API_KEY_HEADER: &str = "x-api-key";
pub const TENANT_HEADER: &str = "x-tenant-id";

/// SHA-256 of a presented key: what the database stores and what we compare.
pub type KeyHash = [u8; 32];

pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// Keys from API_KEYS, kept only as hashes.
pub struct StaticKeys {
    keys: Vec<(KeyHash, TenantId)>,
}

impl StaticKeys {
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            keys: config
                .static_keys
                .iter()
                .map(|k| (hash_key(k.key.expose_secret()), k.tenant.clone()))
                .collect(),
        }
    }

    /// Compares against every key, in constant time per key and without stopping at a match,
    /// so response time says nothing about how close a guess was.
    fn find(&self, hash: &KeyHash) -> Option<TenantId> {
        let mut found = None;
        for (candidate, tenant) in &self.keys {
            if bool::from(candidate.ct_eq(hash)) {
                found = Some(tenant.clone());
            }
        }
        found
    }
}

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
        None => keys::tenant_for(&state.db, &hash, state.config.database.timeout)
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

/// A new random key: 32 bytes from a CSPRNG seeded by the OS, hex-encoded after a `fp_` prefix.
pub fn generate_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("fp_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StaticKey;
    use secrecy::SecretString;

    #[test]
    fn static_keys_match_only_the_exact_key() {
        let keys = StaticKeys::new(&AuthConfig {
            static_keys: vec![StaticKey {
                tenant: TenantId::parse("acme").expect("id"),
                key: SecretString::from("0123456789abcdef".to_owned()),
            }],
        });
        assert_eq!(
            keys.find(&hash_key("0123456789abcdef"))
                .map(|t| t.to_string()),
            Some("acme".to_owned())
        );
        for wrong in [
            "0123456789abcdeF",
            "0123456789abcde",
            "",
            "0123456789abcdef ",
        ] {
            assert!(keys.find(&hash_key(wrong)).is_none(), "{wrong:?}");
        }
    }

    #[test]
    fn generated_keys_are_long_and_distinct() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert_eq!(a.len(), 67);
        assert!(a.len() >= crate::config::MIN_API_KEY_LEN);
    }
}
