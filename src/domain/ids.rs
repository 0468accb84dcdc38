use std::fmt;

use serde::Serialize;

/// Longest partner-supplied id, in bytes (all allowed characters are ASCII).
pub const MAX_ID_LEN: usize = 128;

/// A partner-chosen id: 1-128 characters of `[A-Za-z0-9_.:-]`. Ids end up in S3 keys and log
/// lines, so nothing else gets in: no slashes, spaces, quotes or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ExternalId(String);

impl ExternalId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if s.len() > MAX_ID_LEN {
            return Err(format!("must be at most {MAX_ID_LEN} characters"));
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
        if !s.bytes().all(allowed) {
            return Err("may only contain letters, digits and _ . : -".to_owned());
        }
        // "." and ".." would read as path segments to some S3 tools.
        if s.bytes().all(|b| b == b'.') {
            return Err("must not consist of dots only".to_owned());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(ExternalId);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, String> {
                ExternalId::parse(s).map(Self)
            }

            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl From<ExternalId> for $name {
            fn from(id: ExternalId) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// The partner organisation an API key belongs to.
    TenantId
);
id_type!(
    /// An event: the unit a selfie search runs over.
    SessionId
);
id_type!(
    /// The partner's id for a photo, unique within a session.
    PhotoId
);
id_type!(
    /// The partner's id for an enrolled person, unique within a tenant.
    IdentityId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in [
            "a",
            "event-2026_10.final:v2",
            &"x".repeat(MAX_ID_LEN),
            "A.B",
        ] {
            assert!(ExternalId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = "x".repeat(MAX_ID_LEN + 1);
        let cases = [
            "",
            long.as_str(),
            "a/b",
            "../etc",
            "..",
            ".",
            "a b",
            "é",
            "x'; drop table face; --",
            "$(rm -rf /)",
            "a\0b",
            "a\nb",
        ];
        for bad in cases {
            assert!(ExternalId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
