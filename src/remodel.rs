//! `facepass reindex --model NEW`: re-embeds stored photos with another recognition model,
//! session by session, from the bytes in S3.
//!
//! Vectors of two models cannot be compared, and every search filters on the server's model id.
//! So the new faces are added beside the old ones instead of replacing them: servers still on
//! the old model keep answering from the old faces, servers on the new model from the new ones,
//! and no session is ever without results. Once every server runs the new model,
//! `facepass reindex --cleanup` removes the faces of other models. Re-running is safe: a photo
//! that already has faces of the new model is skipped.

use serde::Serialize;

use crate::domain::TenantId;
use crate::indexing::{faces_to_store, indexing_options};
use crate::startup::AppState;
use crate::store::catalog;

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

type PhotoToDo = (i64, i64, String, String, String, String);

/// Re-embeds every photo (of `tenant`, when given) with the engine `state` runs.
pub async fn reindex(state: &AppState, tenant: Option<&TenantId>) -> anyhow::Result<Summary> {
    let model_id = state.faces.engine().model_id().to_owned();
    let mut summary = Summary {
        model_id: model_id.clone(),
        ..Summary::default()
    };
    let sessions: Vec<(i64, String)> = sqlx::query_as(
        "select session_pk, session_id from session where $1::text is null or tenant_id = $1 \
         order by tenant_id, session_id",
    )
    .bind(tenant.map(|t| t.as_str()))
    .fetch_all(&state.db)
    .await?;
    let options = indexing_options(&state.config.face);
    for (session_pk, session_id) in sessions {
        summary.sessions += 1;
        let photos: Vec<PhotoToDo> = sqlx::query_as(
            "select p.photo_pk, p.session_pk, p.tenant_id, p.photo_id, p.s3_key, \
                    exists (select 1 from face f where f.photo_pk = p.photo_pk \
                            and f.model_id = $2)::text \
             from photo p where p.session_pk = $1 order by p.photo_id",
        )
        .bind(session_pk)
        .bind(&model_id)
        .fetch_all(&state.db)
        .await?;
        for (photo_pk, session_pk, tenant_id, photo_id, key, done) in photos {
            if done == "true" {
                summary.skipped += 1;
                continue;
            }
            let result = async {
                let bytes = state.photos.get(&key).await?;
                let options = options.clone();
                let analysis = state
                    .faces
                    .run(move |engine| engine.analyze(&bytes, &options))
                    .await?;
                let (faces, _, _) = faces_to_store(&analysis);
                let tenant = TenantId::parse(&tenant_id).map_err(anyhow::Error::msg)?;
                let mut tx = state.db.begin().await?;
                sqlx::query("delete from face where photo_pk = $1 and model_id = $2")
                    .bind(photo_pk)
                    .bind(&model_id)
                    .execute(&mut *tx)
                    .await?;
                catalog::insert_faces(&mut tx, photo_pk, &tenant, session_pk, &model_id, &faces)
                    .await?;
                tx.commit().await?;
                Ok::<usize, anyhow::Error>(faces.len())
            }
            .await;
            match result {
                Ok(n) => {
                    summary.photos += 1;
                    summary.faces += n;
                }
                Err(e) => summary
                    .failed
                    .push((session_id.clone(), photo_id, format!("{e:#}"))),
            }
        }
        eprintln!(
            "reindex: session {session_id} done ({} photos re-embedded so far)",
            summary.photos
        );
    }
    Ok(summary)
}

/// Deletes the faces of every model but the one `state` runs. Returns how many.
pub async fn cleanup(state: &AppState) -> anyhow::Result<u64> {
    let model_id = state.faces.engine().model_id();
    let done = sqlx::query("delete from face where model_id <> $1")
        .bind(model_id)
        .execute(&state.db)
        .await?;
    Ok(done.rows_affected())
}
