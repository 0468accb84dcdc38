//! What the server does, apart from HTTP: indexing a photo, searching a session or a whole
//! tenant, enrolling and matching identities, bulk indexing, re-embedding, garbage collection. Routes and CLI
//! commands call these; they call `store` and the engine, and return `ApiError`s. Imports
//! `state`, `store`, `domain`, `config`, `metrics` and the engine, never `http` or `cli`.

pub mod bulk;
pub mod gc;
pub mod identity;
pub mod indexing;
pub mod options;
pub mod reembed;
pub mod search;
pub mod tenant_search;
