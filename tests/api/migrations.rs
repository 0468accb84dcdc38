use facepass::store::migrations;
use sqlx::PgPool;

use crate::helpers::db_of;

/// Everything a migration can change in the public schema, one sorted line per object.
/// sqlx's own bookkeeping table is left out.
async fn schema(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        r#"
        select 'relation ' || c.relname || ' ' || c.relkind::text
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relname not like '_sqlx_migrations%'
        union all
        select 'column ' || table_name || '.' || column_name || ' ' || udt_name || ' '
               || is_nullable || ' ' || coalesce(column_default, '')
          from information_schema.columns
         where table_schema = 'public' and table_name <> '_sqlx_migrations'
        union all
        select 'storage ' || c.relname || '.' || a.attname || ' ' || a.attstorage::text
          from pg_attribute a join pg_class c on c.oid = a.attrelid
          join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind = 'r' and a.attnum > 0 and not a.attisdropped
           and c.relname <> '_sqlx_migrations'
        union all
        select 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
          from pg_constraint
         where connamespace = 'public'::regnamespace
           and conrelid::regclass::text <> '_sqlx_migrations'
        union all
        select 'index ' || indexdef from pg_indexes
         where schemaname = 'public' and tablename <> '_sqlx_migrations'
        union all
        select 'extension ' || extname || ' ' || extversion from pg_extension
        order by 1
        "#,
    )
    .fetch_all(pool)
    .await
    .expect("schema query")
}

async fn project_tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select tablename::text from pg_tables where schemaname = 'public' \
         and tablename <> '_sqlx_migrations' order by 1",
    )
    .fetch_all(pool)
    .await
    .expect("tables")
}

#[sqlx::test(migrations = false)]
async fn every_down_migration_restores_the_previous_schema_exactly(pool: PgPool) {
    let versions: Vec<i64> = migrations::ups().map(|m| m.version).collect();
    assert!(versions.len() >= 4, "{versions:?}");

    // Walk up one version at a time, recording the schema after each step.
    let mut schemas = vec![schema(&pool).await];
    for v in &versions {
        let applied = migrations::up(&db_of(&pool), Some(*v)).await.expect("up");
        assert_eq!(applied, vec![*v]);
        schemas.push(schema(&pool).await);
    }
    assert!(migrations::pending(&db_of(&pool))
        .await
        .expect("pending")
        .is_empty());
    assert_ne!(
        schemas.first(),
        schemas.last(),
        "the migrations changed nothing"
    );

    // Then down one at a time: each step must give back exactly the schema before that up.
    for (i, v) in versions.iter().enumerate().rev() {
        let previous = if i == 0 { 0 } else { versions[i - 1] };
        let reverted = migrations::down(&db_of(&pool), previous)
            .await
            .expect("down");
        assert_eq!(reverted, vec![*v]);
        assert_eq!(schema(&pool).await, schemas[i], "down of {v} differs");
    }
    assert!(project_tables(&pool).await.is_empty());

    // And up again from zero lands on the same schema as the first time.
    migrations::up(&db_of(&pool), None).await.expect("up again");
    assert_eq!(schema(&pool).await, *schemas.last().expect("final"));
}

#[sqlx::test(migrations = false)]
async fn down_and_up_of_a_later_migration_keep_existing_rows(pool: PgPool) {
    migrations::up(&db_of(&pool), None).await.expect("up");
    sqlx::query("insert into tenant (tenant_id) values ('acme')")
        .execute(&pool)
        .await
        .expect("tenant");
    sqlx::query("insert into session (tenant_id, session_id) values ('acme', 'party')")
        .execute(&pool)
        .await
        .expect("session");

    let latest = migrations::latest_version();
    let previous = migrations::previous_version(&db_of(&pool))
        .await
        .expect("previous");
    assert_eq!(
        migrations::down(&db_of(&pool), previous)
            .await
            .expect("down"),
        vec![latest]
    );
    migrations::up(&db_of(&pool), None).await.expect("up");

    let sessions: i64 = sqlx::query_scalar("select count(*) from session where tenant_id = 'acme'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(sessions, 1);
}

#[sqlx::test(migrations = false)]
async fn migrate_cli_goes_down_to_zero_and_back_up(pool: PgPool) {
    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&pool)
        .await
        .expect("db name");
    let mut url =
        url::Url::parse(&std::env::var("DATABASE_URL").expect("DATABASE_URL")).expect("url");
    url.set_path(&db);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_facepass"))
            .args(args)
            .env("DATABASE_URL", url.as_str())
            .output()
            .expect("facepass runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };

    let up = run(&["migrate", "up"]);
    assert!(up.contains("applied 4"), "{up}");
    assert!(!project_tables(&pool).await.is_empty());

    let status = run(&["migrate", "status"]);
    assert_eq!(
        status.lines().filter(|l| l.contains("applied")).count(),
        4,
        "{status}"
    );

    let dry = run(&["migrate", "down", "--to", "0", "--dry-run"]);
    assert!(dry.contains("drop table face"), "{dry}");
    assert!(
        !project_tables(&pool).await.is_empty(),
        "dry run changed the schema"
    );

    run(&["migrate", "down", "--to", "0"]);
    assert!(project_tables(&pool).await.is_empty());

    run(&["migrate", "up"]);
    assert_eq!(
        project_tables(&pool).await,
        [
            "api_key",
            "face",
            "identity",
            "identity_embedding",
            "photo",
            "session",
            "tenant"
        ]
    );
}
