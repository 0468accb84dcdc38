//! Values checked once, when they are built, then passed around as types, and API keys as the
//! server keeps them. Imports nothing of the server.

mod api_key;
mod ids;
mod threshold;

pub use api_key::{generate_key, hash_key, KeyHash, StaticKeys};
pub use ids::{ExternalId, IdentityId, PhotoId, SessionId, TenantId, MAX_ID_LEN};
pub use threshold::Threshold;
