-- A known person enrolled from a few photos, for 1:1 verification and 1:N identification.
create table identity (
    identity_pk  bigint generated always as identity primary key,
    tenant_id    text not null references tenant (tenant_id) on delete cascade,
    identity_id  text not null check (identity_id ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    model_id     text not null,
    -- Normalised mean of the enrollment embeddings.
    template     vector(512) not null,
    metadata     jsonb not null default '{}'::jsonb,
    -- Tagging of already-indexed faces after an enrollment runs in the background:
    -- pending -> running -> done | failed, with the count of faces tagged.
    tagging_status  text not null default 'pending'
                    check (tagging_status in ('pending', 'running', 'done', 'failed')),
    tagged_faces    integer not null default 0,
    enrolled_at  timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    constraint identity_tenant_identity_id_key unique (tenant_id, identity_id)
);
alter table identity alter column template set storage plain;

-- One embedding per enrollment image; the template is derived from these.
create table identity_embedding (
    identity_embedding_pk  bigint generated always as identity primary key,
    identity_pk            bigint not null references identity (identity_pk) on delete cascade,
    image_sha256           bytea not null check (octet_length(image_sha256) = 32),
    bbox                   real[] not null check (array_length(bbox, 1) = 4),
    det_score              real not null,
    model_id               text not null,
    embedding              vector(512) not null,
    created_at             timestamptz not null default now()
);
alter table identity_embedding alter column embedding set storage plain;
create index identity_embedding_identity_idx on identity_embedding (identity_pk);

-- Identity tagging: an indexed face that matches an enrolled identity of the same tenant.
-- Deleting an identity clears its tags.
alter table face
    add column identity_pk bigint references identity (identity_pk) on delete set null,
    add column identity_similarity real;
create index face_identity_idx on face (identity_pk) where identity_pk is not null;
