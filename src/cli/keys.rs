//! `facepass keys create|list|revoke`: API keys kept in the database, only as hashes.

use clap::Subcommand;

use crate::config::DatabaseConfig;
use crate::domain::{generate_key, hash_key, TenantId};
use crate::store::db::Db;
use crate::store::keys;

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key for a tenant and print it once; it cannot be shown again.
    Create {
        #[arg(long)]
        tenant: String,
        /// A note to tell keys apart, e.g. who holds it.
        #[arg(long)]
        label: Option<String>,
    },
    /// Revoke a key by its id (from `keys list`); effective on the next request.
    Revoke { id: uuid::Uuid },
    /// List keys (ids, tenants, prefixes; never the keys).
    List,
}

pub async fn run(action: KeysAction) -> anyhow::Result<()> {
    let config = DatabaseConfig::from_env()?;
    let db = Db::new(crate::cli::setup::connect(&config).await?, &config);
    match action {
        KeysAction::Create { tenant, label } => {
            let tenant = TenantId::parse(&tenant).map_err(|e| anyhow::anyhow!("--tenant {e}"))?;
            let key = generate_key();
            let id =
                keys::create(&db, &tenant, &hash_key(&key), &key[..11], label.as_deref()).await?;
            eprintln!("key {id} created for tenant `{tenant}`; it is shown only this once:");
            println!("{key}");
        }
        KeysAction::Revoke { id } => {
            if keys::revoke(&db, id).await? {
                println!("revoked {id}");
            } else {
                anyhow::bail!("no active key with id {id}");
            }
        }
        KeysAction::List => {
            for k in keys::list(&db).await? {
                println!(
                    "{}  {:<20} {}...  {:<20} created {}{}",
                    k.api_key_id,
                    k.tenant_id,
                    k.key_prefix,
                    k.label.unwrap_or_default(),
                    k.created_at.format("%Y-%m-%d %H:%M"),
                    k.revoked_at
                        .map(|t| format!("  REVOKED {}", t.format("%Y-%m-%d %H:%M")))
                        .unwrap_or_default()
                );
            }
        }
    }
    db.pool().close().await;
    Ok(())
}
