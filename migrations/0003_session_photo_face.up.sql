-- An event session: the set of photos one selfie search runs over.
-- Partner ids (session_id, photo_id) are text; internal keys (*_pk) are bigints so that the
-- face table, the big one, stays narrow.
create table session (
    session_pk  bigint generated always as identity primary key,
    tenant_id   text not null references tenant (tenant_id) on delete cascade,
    session_id  text not null check (session_id ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    created_at  timestamptz not null default now(),
    constraint session_tenant_session_id_key unique (tenant_id, session_id)
);

-- One indexed photo. The bytes live in S3 under s3_key; sha256 lets a re-upload of identical
-- bytes skip detection.
create table photo (
    photo_pk      bigint generated always as identity primary key,
    session_pk    bigint not null references session (session_pk) on delete cascade,
    tenant_id     text not null references tenant (tenant_id) on delete cascade,
    photo_id      text not null check (photo_id ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    s3_key        text not null,
    sha256        bytea not null check (octet_length(sha256) = 32),
    size_bytes    bigint not null check (size_bytes >= 0),
    content_type  text not null,
    width         integer not null check (width > 0),
    height        integer not null check (height > 0),
    indexed_at    timestamptz not null default now(),
    constraint photo_session_photo_id_key unique (session_pk, photo_id)
);
create index photo_tenant_idx on photo (tenant_id);

-- One detected face with its embedding.
create table face (
    face_pk     bigint generated always as identity primary key,
    face_id     uuid not null unique,
    photo_pk    bigint not null references photo (photo_pk) on delete cascade,
    -- tenant_id and session_pk repeat the photo's so that a session search reads this table
    -- alone, through face_tenant_session_idx, without a join.
    tenant_id   text not null,
    session_pk  bigint not null references session (session_pk) on delete cascade,
    -- [x1, y1, x2, y2] in pixels of the upright (EXIF-rotated) photo.
    bbox        real[] not null check (array_length(bbox, 1) = 4),
    -- Eyes, nose, mouth corners: [x0, y0, ..., x4, y4].
    landmarks   real[] not null check (array_length(landmarks, 1) = 10),
    det_score   real not null check (det_score between 0 and 1),
    size_px     real not null,
    sharpness   real not null,
    -- Which model made the embedding (file stem + sha256 prefix). Vectors of different models
    -- are not comparable: a model change means a planned re-index, never a silent mix.
    model_id    text not null,
    embedding   vector(512) not null,
    created_at  timestamptz not null default now()
);

-- 512 float4s are 2 KiB, just over the TOAST threshold: left alone, PostgreSQL would move every
-- vector out of line and an exact scan would chase a TOAST pointer per row (measured 2.4x slower
-- on a 100k-face session, docs/BENCHMARKS.md). PLAIN keeps them inline in the heap page.
alter table face alter column embedding set storage plain;
-- With the vector inline every row passes the ~2 KiB threshold, and PostgreSQL would then push
-- bbox and landmarks out of line instead (178 MB of TOAST at 1M faces). Raising the target to a
-- full page keeps whole rows inline.
alter table face set (toast_tuple_target = 8160);

-- Session search is exact: it reads every face of one session through this index, so it never
-- misses a match the way a post-filtered approximate index does.
create index face_tenant_session_idx on face (tenant_id, session_pk);
create index face_photo_idx on face (photo_pk);

-- Tenant-wide approximate search. IVFFlat learns its lists from the rows present when it is
-- built, so on an empty table the clusters are poor: run `facepass db reindex` once a tenant
-- has data (it picks lists from the row count).
create index face_embedding_ivfflat_idx on face
    using ivfflat (embedding vector_cosine_ops) with (lists = 100);
