//! `facepass gc`: finds what a crash can leave behind and, with `--fix`, repairs it.
//!
//! Indexing writes the S3 object first and commits the rows second, so a crash in between
//! leaves an object no row points to. That is the only inconsistency the write order allows;
//! the reverse (a row whose object is missing) needs outside damage, e.g. objects deleted by
//! hand or a bucket restored from an older backup than the database.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;

use crate::state::AppState;
use crate::store::catalog;

#[derive(Debug, Serialize)]
pub struct GcReport {
    pub objects: usize,
    pub photo_rows: usize,
    /// Objects older than the grace period that no photo row points to.
    pub orphan_objects: Vec<String>,
    /// Photo rows whose object is missing: (tenant, photo_id, key).
    pub missing_objects: Vec<(String, String, String)>,
    pub fixed: bool,
}

/// Objects younger than `grace` are left alone: their upload may still be committing.
pub async fn run(state: &AppState, fix: bool, grace: Duration) -> anyhow::Result<GcReport> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(grace)?;
    let objects = state
        .photos
        .list_with_age(&state.photos.root_prefix())
        .await?;
    let rows = catalog::all_photo_objects(&state.db).await?;
    let referenced: HashSet<&str> = rows.iter().map(|r| r.s3_key.as_str()).collect();
    let present: HashSet<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();

    let orphan_objects: Vec<String> = objects
        .iter()
        .filter(|(k, modified)| {
            !referenced.contains(k.as_str()) && modified.is_some_and(|m| m < cutoff)
        })
        .map(|(k, _)| k.clone())
        .collect();
    let mut missing = Vec::new();
    for row in &rows {
        // A listing is a snapshot; confirm each absence before calling it missing.
        if !present.contains(row.s3_key.as_str()) && !state.photos.exists(&row.s3_key).await? {
            missing.push(row);
        }
    }
    if fix {
        for key in &orphan_objects {
            state.photos.delete(key).await?;
        }
        // Without its bytes a photo cannot be shown; its faces would be search results that
        // lead nowhere. Remove them; the partner re-indexes the photo.
        for row in &missing {
            catalog::delete_photo_row(&state.db, row.photo_pk).await?;
        }
    }
    Ok(GcReport {
        objects: objects.len(),
        photo_rows: rows.len(),
        orphan_objects,
        missing_objects: missing
            .into_iter()
            .map(|r| (r.tenant_id.clone(), r.photo_id.clone(), r.s3_key.clone()))
            .collect(),
        fixed: fix,
    })
}
