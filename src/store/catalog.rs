//! Sessions, photos and faces in PostgreSQL. Every function takes the tenant and filters on it:
//! a row of another tenant is indistinguishable from a missing one.

use pgvector::Vector;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::{PhotoId, SessionId, TenantId};
use crate::store::db::Db;
use facepass_face::BBox;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub session_pk: i64,
    pub session_id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PhotoRow {
    pub photo_pk: i64,
    pub photo_id: String,
    pub s3_key: String,
    pub sha256: Vec<u8>,
    pub size_bytes: i64,
    pub content_type: String,
    pub width: i32,
    pub height: i32,
    pub indexed_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FaceRow {
    pub face_id: Uuid,
    #[sqlx(try_from = "Vec<f32>")]
    pub bbox: BBox,
    pub landmarks: Vec<f32>,
    pub det_score: f32,
    pub size_px: f32,
    pub sharpness: f32,
    pub model_id: String,
}

/// A face to store.
pub struct NewFace {
    pub face_id: Uuid,
    pub bbox: [f32; 4],
    pub landmarks: [f32; 10],
    pub det_score: f32,
    pub size_px: f32,
    pub sharpness: f32,
    pub embedding: Vec<f32>,
}

/// A photo to store with its faces.
pub struct NewPhoto<'a> {
    pub tenant: &'a TenantId,
    pub session: &'a SessionId,
    pub photo: &'a PhotoId,
    pub s3_key: &'a str,
    pub sha256: &'a [u8],
    pub size_bytes: i64,
    pub content_type: &'a str,
    pub width: i32,
    pub height: i32,
    pub model_id: &'a str,
}

pub async fn find_session(
    db: &Db,
    tenant: &TenantId,
    session: &SessionId,
) -> Result<Option<SessionRow>, sqlx::Error> {
    let pool = db.pool();
    db.call("catalog.find_session", async {
        sqlx::query_as(
            "select session_pk, session_id, created_at from session \
             where tenant_id = $1 and session_id = $2",
        )
        .bind(tenant.as_str())
        .bind(session.as_str())
        .fetch_optional(pool)
        .await
    })
    .await
}

/// (photos, faces) in a session.
pub async fn session_counts(db: &Db, session_pk: i64) -> Result<(i64, i64), sqlx::Error> {
    let pool = db.pool();
    db.call("catalog.session_counts", async {
        sqlx::query_as(
            "select (select count(*) from photo where session_pk = $1), \
                    (select count(*) from face where session_pk = $1)",
        )
        .bind(session_pk)
        .fetch_one(pool)
        .await
    })
    .await
}

const PHOTO_COLUMNS: &str = "p.photo_pk, p.photo_id, p.s3_key, p.sha256, p.size_bytes, \
                             p.content_type, p.width, p.height, p.indexed_at";

pub async fn find_photo(
    db: &Db,
    tenant: &TenantId,
    session: &SessionId,
    photo: &PhotoId,
) -> Result<Option<PhotoRow>, sqlx::Error> {
    db.call("catalog.find_photo", async {
        sqlx::query_as(&format!(
            "select {PHOTO_COLUMNS} from photo p join session s using (session_pk) \
             where s.tenant_id = $1 and s.session_id = $2 and p.photo_id = $3"
        ))
        .bind(tenant.as_str())
        .bind(session.as_str())
        .bind(photo.as_str())
        .fetch_optional(db.pool())
        .await
    })
    .await
}

pub async fn photo_faces(db: &Db, photo_pk: i64) -> Result<Vec<FaceRow>, sqlx::Error> {
    let pool = db.pool();
    db.call("catalog.photo_faces", async {
        sqlx::query_as(
            "select face_id, bbox, landmarks, det_score, size_px, sharpness, model_id \
             from face where photo_pk = $1 order by (bbox[3] - bbox[1]) * (bbox[4] - bbox[2]) desc",
        )
        .bind(photo_pk)
        .fetch_all(pool)
        .await
    })
    .await
}

/// Model ids of a photo's faces (empty when it has none), to tell whether a re-upload of the same
/// bytes can be skipped.
pub async fn photo_model_ids(db: &Db, photo_pk: i64) -> Result<Vec<String>, sqlx::Error> {
    let pool = db.pool();
    db.call("catalog.photo_model_ids", async {
        sqlx::query_scalar("select distinct model_id from face where photo_pk = $1")
            .bind(photo_pk)
            .fetch_all(pool)
            .await
    })
    .await
}

/// Stores a photo and its faces in one transaction ([`replace_photo`]), and with `tag_at` tags
/// those that match an enrolled identity at that similarity. Returns the photo's previous S3 key,
/// if that differs.
pub async fn store_photo(
    db: &Db,
    photo: &NewPhoto<'_>,
    faces: &[NewFace],
    tag_at: Option<f32>,
) -> Result<Option<String>, sqlx::Error> {
    db.transaction("catalog.store_photo", async {
        let mut tx = db.pool().begin().await?;
        let (photo_pk, previous) = replace_photo(&mut tx, photo, faces).await?;
        if let (Some(threshold), false) = (tag_at, faces.is_empty()) {
            super::identities::tag_photo_faces(&mut tx, photo_pk, threshold).await?;
        }
        tx.commit().await?;
        Ok(previous)
    })
    .await
}

/// Stores a photo and its faces, replacing whatever that photo id held before. Concurrent calls
/// for the same photo queue on its row lock, so exactly one set of faces survives, and readers
/// see either the old faces or the new ones. Returns the photo's key and its previous S3 key,
/// if that differs.
async fn replace_photo(
    conn: &mut PgConnection,
    photo: &NewPhoto<'_>,
    faces: &[NewFace],
) -> Result<(i64, Option<String>), sqlx::Error> {
    sqlx::query("insert into tenant (tenant_id) values ($1) on conflict do nothing")
        .bind(photo.tenant.as_str())
        .execute(&mut *conn)
        .await?;
    // `do update` (a no-op change) so that `returning` also answers for an existing session.
    let session_pk: i64 = sqlx::query_scalar(
        "insert into session (tenant_id, session_id) values ($1, $2) \
         on conflict on constraint session_tenant_session_id_key \
         do update set session_id = excluded.session_id returning session_pk",
    )
    .bind(photo.tenant.as_str())
    .bind(photo.session.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let inserted: Option<i64> = sqlx::query_scalar(
        "insert into photo (session_pk, tenant_id, photo_id, s3_key, sha256, size_bytes, \
                            content_type, width, height) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         on conflict on constraint photo_session_photo_id_key do nothing returning photo_pk",
    )
    .bind(session_pk)
    .bind(photo.tenant.as_str())
    .bind(photo.photo.as_str())
    .bind(photo.s3_key)
    .bind(photo.sha256)
    .bind(photo.size_bytes)
    .bind(photo.content_type)
    .bind(photo.width)
    .bind(photo.height)
    .fetch_optional(&mut *conn)
    .await?;
    let (photo_pk, previous_key) = match inserted {
        Some(pk) => (pk, None),
        None => {
            let (pk, old_key): (i64, String) = sqlx::query_as(
                "select photo_pk, s3_key from photo where session_pk = $1 and photo_id = $2 \
                 for update",
            )
            .bind(session_pk)
            .bind(photo.photo.as_str())
            .fetch_one(&mut *conn)
            .await?;
            sqlx::query(
                "update photo set s3_key = $2, sha256 = $3, size_bytes = $4, content_type = $5, \
                 width = $6, height = $7, indexed_at = now() where photo_pk = $1",
            )
            .bind(pk)
            .bind(photo.s3_key)
            .bind(photo.sha256)
            .bind(photo.size_bytes)
            .bind(photo.content_type)
            .bind(photo.width)
            .bind(photo.height)
            .execute(&mut *conn)
            .await?;
            sqlx::query("delete from face where photo_pk = $1")
                .bind(pk)
                .execute(&mut *conn)
                .await?;
            (pk, Some(old_key).filter(|k| k != photo.s3_key))
        }
    };
    insert_faces(
        conn,
        photo_pk,
        photo.tenant,
        session_pk,
        photo.model_id,
        faces,
    )
    .await?;
    Ok((photo_pk, previous_key))
}

/// Adds faces to a photo in one statement.
async fn insert_faces(
    conn: &mut PgConnection,
    photo_pk: i64,
    tenant: &TenantId,
    session_pk: i64,
    model_id: &str,
    faces: &[NewFace],
) -> Result<(), sqlx::Error> {
    if faces.is_empty() {
        return Ok(());
    }
    let mut insert: QueryBuilder<Postgres> = QueryBuilder::new(
        "insert into face (face_id, photo_pk, tenant_id, session_pk, bbox, landmarks, \
         det_score, size_px, sharpness, model_id, embedding) ",
    );
    insert.push_values(faces, |mut row, f| {
        row.push_bind(f.face_id)
            .push_bind(photo_pk)
            .push_bind(tenant.as_str())
            .push_bind(session_pk)
            .push_bind(f.bbox.to_vec())
            .push_bind(f.landmarks.to_vec())
            .push_bind(f.det_score)
            .push_bind(f.size_px)
            .push_bind(f.sharpness)
            .push_bind(model_id)
            .push_bind(Vector::from(f.embedding.clone()));
    });
    insert.build().execute(conn).await.map(|_| ())
}

/// Deletes one photo (its faces go with it). Returns its S3 key.
pub async fn delete_photo(
    db: &Db,
    tenant: &TenantId,
    session: &SessionId,
    photo: &PhotoId,
) -> Result<Option<String>, sqlx::Error> {
    db.call("catalog.delete_photo", async {
        sqlx::query_scalar(
            "delete from photo p using session s \
             where s.session_pk = p.session_pk and s.tenant_id = $1 and s.session_id = $2 \
               and p.photo_id = $3 \
             returning p.s3_key",
        )
        .bind(tenant.as_str())
        .bind(session.as_str())
        .bind(photo.as_str())
        .fetch_optional(db.pool())
        .await
    })
    .await
}

/// Deletes a session with all its photos and faces, in one transaction. Returns the photos' S3 keys, or None when
/// the session does not exist for this tenant.
pub async fn delete_session(
    db: &Db,
    tenant: &TenantId,
    session: &SessionId,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    db.transaction("catalog.delete_session", async {
        let mut tx = db.pool().begin().await?;
        let conn = &mut *tx;
        let pk: Option<i64> = sqlx::query_scalar(
            "select session_pk from session where tenant_id = $1 and session_id = $2 for update",
        )
        .bind(tenant.as_str())
        .bind(session.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        let Some(pk) = pk else { return Ok(None) };
        let keys: Vec<String> =
            sqlx::query_scalar("select s3_key from photo where session_pk = $1")
                .bind(pk)
                .fetch_all(&mut *conn)
                .await?;
        // Faces first: deleting them by the session index is cheaper than the photo cascade.
        sqlx::query("delete from face where session_pk = $1")
            .bind(pk)
            .execute(&mut *conn)
            .await?;
        sqlx::query("delete from session where session_pk = $1")
            .bind(pk)
            .execute(&mut *conn)
            .await?;
        tx.commit().await?;
        Ok(Some(keys))
    })
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Hit {
    pub photo_id: String,
    pub s3_key: String,
    pub face_id: Uuid,
    #[sqlx(try_from = "Vec<f32>")]
    pub bbox: BBox,
    pub similarity: f64,
}

/// Exact search within one session: every face of the session is compared (through the
/// (tenant_id, session_pk) index, never the approximate IVFFlat index, which would filter
/// after its scan and lose matches). One hit per photo, its best face, best photos first.
/// `top_k` is applied before the join to `photo`: joining first let PostgreSQL's custom plans
/// scan every photo of every tenant (docs/BENCHMARKS.md: 100 ms instead of 18 ms at 10k faces).
pub async fn search_session(
    db: &Db,
    tenant: &TenantId,
    session_pk: i64,
    model_id: &str,
    embedding: &[f32],
    threshold: f32,
    top_k: i64,
) -> Result<Vec<Hit>, sqlx::Error> {
    let pool = db.pool();
    db.call("catalog.search_session", async {
        sqlx::query_as(
            "with scored as ( \
                 select f.photo_pk, f.face_id, f.bbox, 1 - (f.embedding <=> $1) as similarity \
                 from face f \
                 where f.tenant_id = $2 and f.session_pk = $3 and f.model_id = $4 \
             ), best as ( \
                 select distinct on (photo_pk) * from scored \
                 where similarity >= $5 \
                 order by photo_pk, similarity desc \
             ), top as ( \
                 select * from best order by similarity desc, photo_pk limit $6 \
             ) \
             select p.photo_id, p.s3_key, t.face_id, t.bbox, t.similarity \
             from top t join photo p using (photo_pk) \
             order by t.similarity desc, p.photo_id",
        )
        .bind(Vector::from(embedding.to_vec()))
        .bind(tenant.as_str())
        .bind(session_pk)
        .bind(model_id)
        .bind(f64::from(threshold))
        .bind(top_k)
        .fetch_all(pool)
        .await
    })
    .await
}

/// A photo row as `facepass gc` checks it against the bucket.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PhotoObject {
    pub photo_pk: i64,
    pub tenant_id: String,
    pub photo_id: String,
    pub s3_key: String,
}

/// Every photo row of every tenant, with its object key (`facepass gc`).
pub async fn all_photo_objects(db: &Db) -> Result<Vec<PhotoObject>, sqlx::Error> {
    db.unbounded(
        "catalog.all_photo_objects",
        sqlx::query_as("select photo_pk, tenant_id, photo_id, s3_key from photo")
            .fetch_all(db.pool()),
    )
    .await
}

/// Deletes a photo row (its faces cascade) by key, whatever its tenant (`facepass gc --fix`).
pub async fn delete_photo_row(db: &Db, photo_pk: i64) -> Result<(), sqlx::Error> {
    db.call(
        "catalog.delete_photo_row",
        sqlx::query("delete from photo where photo_pk = $1")
            .bind(photo_pk)
            .execute(db.pool()),
    )
    .await
    .map(|_| ())
}

/// Every session (of `tenant`, when given) as (session_pk, session_id), in a stable order.
pub async fn all_sessions(
    db: &Db,
    tenant: Option<&TenantId>,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    db.unbounded(
        "catalog.all_sessions",
        sqlx::query_as(
            "select session_pk, session_id from session where $1::text is null or tenant_id = $1 \
             order by tenant_id, session_id",
        )
        .bind(tenant.map(|t| t.as_str()))
        .fetch_all(db.pool()),
    )
    .await
}

/// A stored photo as `facepass reembed` sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PhotoToEmbed {
    pub photo_pk: i64,
    pub session_pk: i64,
    pub tenant_id: String,
    pub photo_id: String,
    pub s3_key: String,
    /// It already has faces of the model asked about.
    pub done: bool,
}

/// The photos of a session, each with whether it has faces of `model_id` already.
pub async fn photos_to_embed(
    db: &Db,
    session_pk: i64,
    model_id: &str,
) -> Result<Vec<PhotoToEmbed>, sqlx::Error> {
    db.unbounded(
        "catalog.photos_to_embed",
        sqlx::query_as(
            "select p.photo_pk, p.session_pk, p.tenant_id, p.photo_id, p.s3_key, \
                    exists (select 1 from face f where f.photo_pk = p.photo_pk \
                            and f.model_id = $2) as done \
             from photo p where p.session_pk = $1 order by p.photo_id",
        )
        .bind(session_pk)
        .bind(model_id)
        .fetch_all(db.pool()),
    )
    .await
}

/// Replaces a photo's faces of one model (those of other models stay), in one transaction.
pub async fn replace_model_faces(
    db: &Db,
    photo: &PhotoToEmbed,
    tenant: &TenantId,
    model_id: &str,
    faces: &[NewFace],
) -> Result<(), sqlx::Error> {
    db.transaction("catalog.replace_model_faces", async {
        let mut tx = db.pool().begin().await?;
        sqlx::query("delete from face where photo_pk = $1 and model_id = $2")
            .bind(photo.photo_pk)
            .bind(model_id)
            .execute(&mut *tx)
            .await?;
        insert_faces(
            &mut tx,
            photo.photo_pk,
            tenant,
            photo.session_pk,
            model_id,
            faces,
        )
        .await?;
        tx.commit().await
    })
    .await
}

/// Deletes the faces of every model but `model_id`; returns how many.
pub async fn delete_faces_of_other_models(db: &Db, model_id: &str) -> Result<u64, sqlx::Error> {
    db.unbounded(
        "catalog.delete_faces_of_other_models",
        sqlx::query("delete from face where model_id <> $1")
            .bind(model_id)
            .execute(db.pool()),
    )
    .await
    .map(|done| done.rows_affected())
}
/// A tenant-wide search: the `top_k` faces of the tenant closest to `embedding`, those at
/// `threshold` or above kept.
pub struct TenantQuery<'a> {
    pub tenant: &'a TenantId,
    pub model_id: &'a str,
    pub embedding: &'a [f32],
    pub threshold: f32,
    pub top_k: i64,
    /// IVFFlat lists to probe (IVFFLAT_PROBES).
    pub probes: u32,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantHit {
    pub session_id: String,
    pub photo_id: String,
    pub s3_key: String,
    pub face_id: Uuid,
    #[sqlx(try_from = "Vec<f32>")]
    pub bbox: BBox,
    pub similarity: f64,
}

/// Tenant-wide approximate search across all the tenant's sessions, one row per face, best
/// first. The inner `order by embedding <=> q limit k` is the shape the planner answers from
/// `face_embedding_ivfflat_idx` once the table is large (a small tenant may be read exactly
/// through `face_tenant_session_idx` instead). The index filters on the tenant after its scan,
/// so `iterative_scan` keeps probing lists until `top_k` of the tenant's faces are found; it
/// returns them in relaxed order, which the outer query sorts. The threshold is applied outside
/// too, so it never stops the index scan early. Matches in lists not probed are missed: this is
/// approximate (docs/BENCHMARKS.md: recall@50 98.4% at 1M faces with lists=100, probes=10).
pub async fn search_tenant(
    db: &Db,
    query: &TenantQuery<'_>,
) -> Result<Vec<TenantHit>, sqlx::Error> {
    db.call("catalog.search_tenant", async {
        let mut tx = db.pool().begin().await?;
        // For this transaction only: pooled connections keep the server's defaults.
        sqlx::query(
            "select set_config('ivfflat.probes', $1, true), \
                    set_config('ivfflat.iterative_scan', 'relaxed_order', true)",
        )
        .bind(query.probes.to_string())
        .execute(&mut *tx)
        .await?;
        let hits: Vec<TenantHit> = sqlx::query_as(
            "with nearest as materialized ( \
                 select f.photo_pk, f.face_id, f.bbox, f.embedding <=> $1 as distance \
                 from face f \
                 where f.tenant_id = $2 and f.model_id = $3 \
                 order by f.embedding <=> $1 \
                 limit $4 \
             ) \
             select s.session_id, p.photo_id, p.s3_key, n.face_id, n.bbox, \
                    1 - n.distance as similarity \
             from nearest n join photo p using (photo_pk) \
                  join session s on s.session_pk = p.session_pk \
             where 1 - n.distance >= $5 \
             order by n.distance, s.session_id, p.photo_id, n.face_id",
        )
        .bind(Vector::from(query.embedding.to_vec()))
        .bind(query.tenant.as_str())
        .bind(query.model_id)
        .bind(query.top_k)
        .bind(f64::from(query.threshold))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(hits)
    })
    .await
}
