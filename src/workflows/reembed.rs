//! `facepass reembed --model NEW`: re-embeds stored photos with another recognition model,
//! session by session, from the bytes in S3.
//!
//! Vectors of two models cannot be compared, and every search filters on the server's model id.
//! So the new faces are added beside the old ones instead of replacing them: servers still on
//! the old model keep answering from the old faces, servers on the new model from the new ones,
//! and no session is ever without results. Once every server runs the new model,
//! `facepass reembed --cleanup` removes the faces of other models. Re-running is safe: a photo
//! that already has faces of the new model is skipped.

use serde::Serialize;

use crate::domain::TenantId;
use crate::state::AppState;
use crate::store::catalog;
use crate::workflows::indexing::faces_to_store;
use crate::workflows::options::indexing_options;

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub model_id: String,
    pub sessions: usize,
    pub photos: usize,
    pub skipped: usize,
    pub faces: usize,
    /// (session, photo, reason)
    pub failed: Vec<(String, String, String)>,
}

/// Re-embeds every photo (of `tenant`, when given) with the engine `state` runs.
pub async fn reembed(state: &AppState, tenant: Option<&TenantId>) -> anyhow::Result<Summary> {
    let model_id = state.faces.engine().model_id().to_owned();
    let mut summary = Summary {
        model_id: model_id.clone(),
        ..Summary::default()
    };
    let options = indexing_options(&state.config.face);
    for (session_pk, session_id) in catalog::all_sessions(&state.db, tenant).await? {
        summary.sessions += 1;
        for photo in catalog::photos_to_embed(&state.db, session_pk, &model_id).await? {
            if photo.done {
                summary.skipped += 1;
                continue;
            }
            let result = async {
                let bytes = state.photos.get(&photo.s3_key).await?;
                let options = options.clone();
                let analysis = state
                    .faces
                    .run(move |engine| engine.analyze(&bytes, &options))
                    .await?;
                let (faces, _, _) = faces_to_store(&analysis);
                let tenant = TenantId::parse(&photo.tenant_id).map_err(anyhow::Error::msg)?;
                catalog::replace_model_faces(&state.db, &photo, &tenant, &model_id, &faces).await?;
                Ok::<usize, anyhow::Error>(faces.len())
            }
            .await;
            match result {
                Ok(n) => {
                    summary.photos += 1;
                    summary.faces += n;
                }
                Err(e) => summary.failed.push((
                    session_id.clone(),
                    photo.photo_id.clone(),
                    format!("{e:#}"),
                )),
            }
        }
        eprintln!(
            "reembed: session {session_id} done ({} photos re-embedded so far)",
            summary.photos
        );
    }
    Ok(summary)
}

/// Deletes the faces of every model but the one `state` runs. Returns how many.
pub async fn cleanup(state: &AppState) -> anyhow::Result<u64> {
    let model_id = state.faces.engine().model_id();
    Ok(catalog::delete_faces_of_other_models(&state.db, model_id).await?)
}
