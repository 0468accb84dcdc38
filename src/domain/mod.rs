//! Values checked once, when they are built, then passed around as types.

mod ids;
mod threshold;

pub use ids::{ExternalId, IdentityId, PhotoId, SessionId, TenantId, MAX_ID_LEN};
pub use threshold::Threshold;
