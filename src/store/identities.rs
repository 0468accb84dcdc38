//! Enrolled identities, their embeddings and the tags they put on indexed faces. Every query is
//! scoped to the tenant.

use pgvector::Vector;
use sqlx::PgConnection;

use crate::domain::{IdentityId, TenantId};
use crate::store::db::Db;
use facepass_face::BBox;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdentityRow {
    pub identity_pk: i64,
    pub identity_id: String,
    pub model_id: String,
    pub template: Vector,
    pub image_count: i64,
    pub tagging_status: String,
    pub tagged_faces: i32,
    pub enrolled_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

const IDENTITY_COLUMNS: &str = "i.identity_pk, i.identity_id, i.model_id, i.template, \
     (select count(*) from identity_embedding e where e.identity_pk = i.identity_pk) as image_count, \
     i.tagging_status, i.tagged_faces, i.enrolled_at, i.updated_at";

/// One enrollment image's face.
pub struct NewIdentityEmbedding {
    pub image_sha256: [u8; 32],
    pub bbox: [f32; 4],
    pub det_score: f32,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollMode {
    /// Replace every previous image of the identity.
    Replace,
    /// Add images to those already enrolled.
    Append,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("the identity was enrolled with model {0}; re-enroll it instead of appending")]
    ModelMismatch(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub async fn find(
    db: &Db,
    tenant: &TenantId,
    identity: &IdentityId,
) -> Result<Option<IdentityRow>, sqlx::Error> {
    let pool = db.pool();
    db.call("identities.find", async {
        sqlx::query_as(&format!(
            "select {IDENTITY_COLUMNS} from identity i where i.tenant_id = $1 and i.identity_id = $2"
        ))
        .bind(tenant.as_str())
        .bind(identity.as_str())
        .fetch_optional(pool)
        .await
    })
    .await
}

/// Enrolls (or re-enrolls, or appends to) an identity in one transaction and recomputes its
/// template: the L2-normalised mean of all its embeddings. The caller then starts
/// tagging. Returns the identity's key.
pub async fn enroll(
    db: &Db,
    tenant: &TenantId,
    identity: &IdentityId,
    model_id: &str,
    mode: EnrollMode,
    embeddings: &[NewIdentityEmbedding],
) -> Result<i64, EnrollError> {
    db.transaction("identities.enroll", async {
        let mut tx = db.pool().begin().await?;
        let conn = &mut *tx;
        sqlx::query("insert into tenant (tenant_id) values ($1) on conflict do nothing")
            .bind(tenant.as_str())
            .execute(&mut *conn)
            .await?;
        // A placeholder template until the real one is computed below, in the same transaction.
        let first = Vector::from(
            embeddings
                .first()
                .map(|e| e.embedding.clone())
                .unwrap_or_default(),
        );
        let inserted: Option<i64> = sqlx::query_scalar(
            "insert into identity (tenant_id, identity_id, model_id, template) values ($1, $2, $3, $4) \
             on conflict on constraint identity_tenant_identity_id_key do nothing returning identity_pk",
        )
        .bind(tenant.as_str())
        .bind(identity.as_str())
        .bind(model_id)
        .bind(&first)
        .fetch_optional(&mut *conn)
        .await?;
        let pk = match inserted {
            Some(pk) => pk,
            None => {
                let (pk, existing_model): (i64, String) = sqlx::query_as(
                    "select identity_pk, model_id from identity \
                     where tenant_id = $1 and identity_id = $2 for update",
                )
                .bind(tenant.as_str())
                .bind(identity.as_str())
                .fetch_one(&mut *conn)
                .await?;
                match mode {
                    EnrollMode::Append if existing_model != model_id => {
                        return Err(EnrollError::ModelMismatch(existing_model));
                    }
                    EnrollMode::Append => {}
                    EnrollMode::Replace => {
                        sqlx::query("delete from identity_embedding where identity_pk = $1")
                            .bind(pk)
                            .execute(&mut *conn)
                            .await?;
                        // Its old tags are recomputed from the new template by the tagging job.
                        sqlx::query(
                            "update face set identity_pk = null, identity_similarity = null \
                             where identity_pk = $1",
                        )
                        .bind(pk)
                        .execute(&mut *conn)
                        .await?;
                    }
                }
                pk
            }
        };
        for e in embeddings {
            sqlx::query(
                "insert into identity_embedding (identity_pk, image_sha256, bbox, det_score, model_id, embedding) \
                 values ($1, $2, $3, $4, $5, $6)",
            )
            .bind(pk)
            .bind(&e.image_sha256[..])
            .bind(e.bbox.to_vec())
            .bind(e.det_score)
            .bind(model_id)
            .bind(Vector::from(e.embedding.clone()))
            .execute(&mut *conn)
            .await?;
        }
        sqlx::query(
            "update identity set model_id = $2, updated_at = now(), tagging_status = 'pending', \
             tagged_faces = 0, \
             template = (select l2_normalize(avg(embedding)) from identity_embedding where identity_pk = $1) \
             where identity_pk = $1",
        )
        .bind(pk)
        .bind(model_id)
        .execute(&mut *conn)
        .await?;
        tx.commit().await?;
        Ok(pk)
    })
    .await
}

pub async fn delete(
    db: &Db,
    tenant: &TenantId,
    identity: &IdentityId,
) -> Result<bool, sqlx::Error> {
    db.call("identities.delete", async {
        // Tags on faces go with it (on delete set null).
        let done = sqlx::query("delete from identity where tenant_id = $1 and identity_id = $2")
            .bind(tenant.as_str())
            .bind(identity.as_str())
            .execute(db.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    })
    .await
}

/// A page of identities in id order, after `after` (keyset pagination).
pub async fn list(
    db: &Db,
    tenant: &TenantId,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<IdentityRow>, sqlx::Error> {
    let pool = db.pool();
    db.call("identities.list", async {
        sqlx::query_as(&format!(
            "select {IDENTITY_COLUMNS} from identity i \
             where i.tenant_id = $1 and ($2::text is null or i.identity_id > $2) \
             order by i.identity_id limit $3"
        ))
        .bind(tenant.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub identity_id: String,
    pub similarity: f64,
}

/// 1:N: the tenant's identities closest to `embedding`, best first (exact scan).
pub async fn nearest(
    db: &Db,
    tenant: &TenantId,
    model_id: &str,
    embedding: &[f32],
    top_k: i64,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let pool = db.pool();
    db.call("identities.nearest", async {
        sqlx::query_as(
            "select identity_id, 1 - (template <=> $1) as similarity from identity \
             where tenant_id = $2 and model_id = $3 \
             order by template <=> $1, identity_id limit $4",
        )
        .bind(Vector::from(embedding.to_vec()))
        .bind(tenant.as_str())
        .bind(model_id)
        .bind(top_k)
        .fetch_all(pool)
        .await
    })
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EnrolledMatch {
    /// Position of the image among the identity's enrollment images, from 1, oldest first.
    pub image: i64,
    pub image_sha256: Vec<u8>,
    #[sqlx(try_from = "Vec<f32>")]
    pub bbox: BBox,
    pub det_score: f32,
    pub enrolled_at: chrono::DateTime<chrono::Utc>,
    pub similarity: f64,
}

/// The identity's enrollment faces closest to `embedding`, best first, at most `limit`.
pub async fn enrolled_matches(
    db: &Db,
    identity_pk: i64,
    model_id: &str,
    embedding: &[f32],
    limit: i64,
) -> Result<Vec<EnrolledMatch>, sqlx::Error> {
    db.call(
        "identities.enrolled_matches",
        sqlx::query_as(
            "select image, image_sha256, bbox, det_score, enrolled_at, similarity from ( \
                 select row_number() over (order by identity_embedding_pk) as image, \
                        image_sha256, bbox, det_score, created_at as enrolled_at, model_id, \
                        1 - (embedding <=> $2) as similarity \
                 from identity_embedding where identity_pk = $1 \
             ) e \
             where model_id = $3 \
             order by similarity desc, image limit $4",
        )
        .bind(identity_pk)
        .bind(Vector::from(embedding.to_vec()))
        .bind(model_id)
        .bind(limit)
        .fetch_all(db.pool()),
    )
    .await
}

/// Tags the tenant's indexed faces that match this identity better than any tag they carry.
/// Returns how many faces now carry this identity.
pub async fn tag_faces(db: &Db, identity_pk: i64, threshold: f32) -> Result<i64, sqlx::Error> {
    let pool = db.pool();
    db.transaction("identities.tag_faces", async {
        let mut tx = pool.begin().await?;
        sqlx::query("update identity set tagging_status = 'running' where identity_pk = $1")
            .bind(identity_pk)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "update face f set identity_pk = i.identity_pk, \
                    identity_similarity = 1 - (f.embedding <=> i.template) \
             from identity i \
             where i.identity_pk = $1 and f.tenant_id = i.tenant_id and f.model_id = i.model_id \
               and 1 - (f.embedding <=> i.template) >= $2 \
               and (f.identity_pk is null or f.identity_pk = i.identity_pk \
                    or f.identity_similarity < 1 - (f.embedding <=> i.template))",
        )
        .bind(identity_pk)
        .bind(f64::from(threshold))
        .execute(&mut *tx)
        .await?;
        let tagged: i64 = sqlx::query_scalar("select count(*) from face where identity_pk = $1")
            .bind(identity_pk)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "update identity set tagging_status = 'done', tagged_faces = $2 where identity_pk = $1",
        )
        .bind(identity_pk)
        .bind(tagged as i32)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(tagged)
    })
    .await
}

pub async fn mark_tagging_failed(db: &Db, identity_pk: i64) -> Result<(), sqlx::Error> {
    let pool = db.pool();
    db.call("identities.mark_tagging_failed", async {
        sqlx::query("update identity set tagging_status = 'failed' where identity_pk = $1")
            .bind(identity_pk)
            .execute(pool)
            .await
            .map(|_| ())
    })
    .await
}

/// Tags the faces of a just-indexed photo with their best-matching identity of the tenant.
pub(super) async fn tag_photo_faces(
    conn: &mut PgConnection,
    photo_pk: i64,
    threshold: f32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update face f set identity_pk = m.identity_pk, identity_similarity = m.similarity \
         from ( \
             select distinct on (f2.face_pk) f2.face_pk, i.identity_pk, \
                    1 - (f2.embedding <=> i.template) as similarity \
             from face f2 join identity i on i.tenant_id = f2.tenant_id and i.model_id = f2.model_id \
             where f2.photo_pk = $1 \
             order by f2.face_pk, f2.embedding <=> i.template \
         ) m \
         where f.face_pk = m.face_pk and m.similarity >= $2",
    )
    .bind(photo_pk)
    .bind(f64::from(threshold))
    .execute(conn)
    .await
    .map(|_| ())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaggedPhoto {
    pub session_id: String,
    pub photo_id: String,
    pub s3_key: String,
    pub face_id: uuid::Uuid,
    #[sqlx(try_from = "Vec<f32>")]
    pub bbox: BBox,
    pub similarity: f32,
}

/// Indexed photos in which the identity was tagged, best match first.
pub async fn tagged_photos(
    db: &Db,
    identity_pk: i64,
    limit: i64,
) -> Result<Vec<TaggedPhoto>, sqlx::Error> {
    let pool = db.pool();
    db.call("identities.tagged_photos", async {
        sqlx::query_as(
            "select s.session_id, p.photo_id, p.s3_key, f.face_id, f.bbox, f.identity_similarity as similarity \
             from face f join photo p using (photo_pk) join session s on s.session_pk = p.session_pk \
             where f.identity_pk = $1 \
             order by f.identity_similarity desc, p.photo_id limit $2",
        )
        .bind(identity_pk)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
    .await
}
