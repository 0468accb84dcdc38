//! API keys as the server handles them: generated from the OS's CSPRNG, kept and compared only
//! as SHA-256 hashes.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::TenantId;

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
    /// From (key, tenant) pairs; only the keys' hashes are kept.
    pub fn new<'a>(keys: impl IntoIterator<Item = (&'a str, TenantId)>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|(key, tenant)| (hash_key(key), tenant))
                .collect(),
        }
    }

    /// Compares against every key, in constant time per key and without stopping at a match,
    /// so response time says nothing about how close a guess was.
    pub fn find(&self, hash: &KeyHash) -> Option<TenantId> {
        let mut found = None;
        for (candidate, tenant) in &self.keys {
            if bool::from(candidate.ct_eq(hash)) {
                found = Some(tenant.clone());
            }
        }
        found
    }
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

    #[test]
    fn static_keys_match_only_the_exact_key() {
        let keys = StaticKeys::new([("0123456789abcdef", TenantId::parse("acme").expect("id"))]);
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
