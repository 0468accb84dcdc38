//! `facepass index-dir`: index every image of a folder through the same code path as
//! `POST /api/v2/index`, several at a time, with progress on stderr and a summary at the end.
//! Re-running it is cheap: photos already indexed with the same bytes are recognised by sha256
//! and skipped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;

use crate::domain::{PhotoId, SessionId, TenantId};
use crate::state::AppState;
use crate::workflows::indexing::{index_photo, IndexRequest};

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub photos: usize,
    pub indexed: usize,
    /// Already indexed with the same bytes.
    pub unchanged: usize,
    pub faces: usize,
    /// (file, reason)
    pub failed: Vec<(String, String)>,
    pub seconds: f64,
}

/// The photo id a file gets: its name, with characters ids may not hold replaced by `_`.
pub fn photo_id_for(path: &Path) -> Option<PhotoId> {
    let name = path.file_name()?.to_string_lossy();
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(crate::domain::MAX_ID_LEN)
        .collect();
    PhotoId::parse(&cleaned).ok()
}

pub fn images_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .is_some_and(|e| matches!(e.as_str(), "jpg" | "jpeg" | "png" | "webp"))
        })
        .collect();
    files.sort();
    Ok(files)
}

pub async fn index_dir(
    state: &AppState,
    files: Vec<PathBuf>,
    tenant: &TenantId,
    session: &SessionId,
    parallel: usize,
) -> Summary {
    let start = Instant::now();
    let total = files.len();
    let mut summary = Summary {
        photos: total,
        ..Summary::default()
    };
    let mut done = 0usize;
    let mut results = futures_util::stream::iter(files.into_iter().map(|path| async move {
        let name = path.display().to_string();
        let Some(photo) = photo_id_for(&path) else {
            return (name, Err("no usable photo id in the file name".to_owned()));
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => return (name, Err(format!("cannot read: {e}"))),
        };
        let outcome = index_photo(
            state,
            IndexRequest {
                tenant: tenant.clone(),
                session: session.clone(),
                photo,
                bytes,
            },
        )
        .await;
        (
            name,
            outcome.map_err(|e| format!("{}: {}", e.code(), e.message())),
        )
    }))
    .buffer_unordered(parallel.max(1));
    while let Some((name, result)) = results.next().await {
        done += 1;
        match result {
            Ok(o) if o.unchanged => summary.unchanged += 1,
            Ok(o) => {
                summary.indexed += 1;
                summary.faces += o.faces.len();
            }
            Err(reason) => summary.failed.push((name.clone(), reason)),
        }
        let elapsed = start.elapsed().as_secs_f64();
        let rate = done as f64 / elapsed.max(1e-3);
        let eta = (total - done) as f64 / rate.max(1e-6);
        eprintln!(
            "[{done}/{total}] {rate:.1} photos/s, {} faces, {} failed, ETA {eta:.0}s  {name}",
            summary.faces,
            summary.failed.len()
        );
    }
    summary.seconds = start.elapsed().as_secs_f64();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_become_valid_photo_ids() {
        let id = |s: &str| photo_id_for(Path::new(s)).map(|p| p.to_string());
        assert_eq!(id("/x/IMG_0042.JPG").as_deref(), Some("IMG_0042.JPG"));
        assert_eq!(
            id("/x/my photo (1).jpg").as_deref(),
            Some("my_photo__1_.jpg")
        );
        assert_eq!(id("/x/été.png").as_deref(), Some("_t_.png"));
    }
}
