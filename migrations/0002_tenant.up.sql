-- A tenant is one partner organisation. Every row that holds partner data carries tenant_id and
-- every query filters on it: that is the isolation boundary.
create table tenant (
    tenant_id   text primary key
                check (tenant_id ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    created_at  timestamptz not null default now()
);

-- API keys created with `facepass keys create`. Only a SHA-256 of the key is stored: keys are
-- 256-bit random strings, so a fast unsalted hash is enough (no dictionary to attack) and lets
-- us look a key up by its hash. Keys from API_KEYS in the environment are not stored here.
create table api_key (
    api_key_id  uuid primary key,
    tenant_id   text not null references tenant (tenant_id) on delete cascade,
    key_hash    bytea not null unique check (octet_length(key_hash) = 32),
    -- The first characters of the key, so an operator can tell keys apart in a listing.
    key_prefix  text not null,
    label       text,
    created_at  timestamptz not null default now(),
    revoked_at  timestamptz
);
create index api_key_tenant_idx on api_key (tenant_id);
