//! What the CLI subcommands other than `serve` do.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sqlx::migrate::MigrationType;

use crate::cli::{DbAction, KeysAction, MigrateAction};
use crate::config::{Config, DatabaseConfig, FaceConfig};
use crate::store::{db, migrations};

pub async fn migrate(action: MigrateAction) -> anyhow::Result<()> {
    let config = DatabaseConfig::from_env()?;
    let pool = db::pool_options(&config)
        .connect(config.url())
        .await
        .context("cannot connect to PostgreSQL")?;
    match action {
        MigrateAction::Up { to, dry_run: true } => {
            let plan = migrations::plan_up(&pool, to).await?;
            print!(
                "{}",
                migrations::sql_for(&plan, MigrationType::ReversibleUp)
            );
            eprintln!("dry run: {} migration(s) would be applied", plan.len());
        }
        MigrateAction::Up { to, dry_run: false } => {
            let applied = migrations::up(&pool, to).await?;
            if applied.is_empty() {
                println!("schema is up to date (version {})", current(&pool).await?);
            }
            for v in applied {
                println!("applied {v}");
            }
        }
        MigrateAction::Down { to, dry_run } => {
            let to = match to {
                Some(v) => v,
                None => migrations::previous_version(&pool).await?,
            };
            if dry_run {
                let plan = migrations::plan_down(&pool, to).await?;
                print!(
                    "{}",
                    migrations::sql_for(&plan, MigrationType::ReversibleDown)
                );
                eprintln!("dry run: {} migration(s) would be reverted", plan.len());
            } else {
                let reverted = migrations::down(&pool, to).await?;
                if reverted.is_empty() {
                    println!("nothing to revert (version {})", current(&pool).await?);
                }
                for v in reverted {
                    println!("reverted {v}");
                }
            }
        }
        MigrateAction::Status => {
            for m in migrations::status(&pool).await? {
                println!(
                    "{:>4}  {:<9} {:<28} {}{}",
                    m.version,
                    if m.applied { "applied" } else { "pending" },
                    m.description,
                    m.applied_at.unwrap_or_default(),
                    if m.checksum_ok {
                        ""
                    } else {
                        "  CHECKSUM MISMATCH"
                    }
                );
            }
        }
    }
    pool.close().await;
    Ok(())
}

pub async fn keys(action: KeysAction) -> anyhow::Result<()> {
    let config = DatabaseConfig::from_env()?;
    let pool = db::pool_options(&config)
        .connect(config.url())
        .await
        .context("cannot connect to PostgreSQL")?;
    match action {
        KeysAction::Create { tenant, label } => {
            let tenant = crate::domain::TenantId::parse(&tenant)
                .map_err(|e| anyhow::anyhow!("--tenant {e}"))?;
            let key = crate::auth::generate_key();
            let id = crate::store::keys::create(
                &pool,
                &tenant,
                &crate::auth::hash_key(&key),
                &key[..11],
                label.as_deref(),
            )
            .await?;
            eprintln!("key {id} created for tenant `{tenant}`; it is shown only this once:");
            println!("{key}");
        }
        KeysAction::Revoke { id } => {
            if crate::store::keys::revoke(&pool, id).await? {
                println!("revoked {id}");
            } else {
                anyhow::bail!("no active key with id {id}");
            }
        }
        KeysAction::List => {
            for k in crate::store::keys::list(&pool).await? {
                println!(
                    "{}  {:<20} {}...  {:<20} created {}{}",
                    k.api_key_id,
                    k.tenant_id,
                    k.key_prefix,
                    k.label.unwrap_or_default(),
                    k.created_at.format("%Y-%m-%d %H:%M"),
                    k.revoked_at
                        .map(|t| format!("  REVOKED {}", t.format("%Y-%m-%d %H:%M")))
                        .unwrap_or_default()
                );
            }
        }
    }
    pool.close().await;
    Ok(())
}

async fn current(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    let latest = migrations::latest_version();
    let pending = migrations::pending(pool).await?;
    Ok(if pending.is_empty() {
        latest
    } else {
        pending[0] - 1
    })
}

pub fn show_config() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    // Secrets print as [REDACTED] (secrecy's Debug).
    println!("{config:#?}");
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

pub async fn detect(images: &[PathBuf], with_embedding: bool) -> anyhow::Result<()> {
    let config = FaceConfig::from_env()?;
    let engine = crate::startup::load_engine(&config).await?;
    // The faces indexing would store, with or without their embeddings.
    let options = crate::face::AnalyzeOptions {
        embed: with_embedding,
        ..crate::indexing::indexing_options(&config)
    };
    let mut out = Vec::new();
    for path in images {
        let bytes = read(path)?;
        let analysis = engine
            .analyze(&bytes, &options)
            .with_context(|| format!("{}", path.display()))?;
        out.push(serde_json::json!({ "file": path.display().to_string(), "analysis": analysis }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub async fn compare(a: &Path, b: &Path) -> anyhow::Result<()> {
    let config = FaceConfig::from_env()?;
    let engine = crate::startup::load_engine(&config).await?;
    let options = crate::face::AnalyzeOptions {
        max_faces: 1,
        min_face_px: 0,
        min_score: config.detection_threshold.get(),
        embed: true,
        largest_only: true,
    };
    let mut embeddings = Vec::new();
    for path in [a, b] {
        let analysis = engine.analyze(&read(path)?, &options)?;
        let embedding = analysis
            .faces
            .into_iter()
            .find_map(|f| f.embedding)
            .with_context(|| format!("no face found in {}", path.display()))?;
        embeddings.push(embedding);
    }
    let similarity = embeddings[0].cosine(&embeddings[1]);
    let threshold = config.similarity_threshold.get();
    println!(
        "{}",
        serde_json::json!({
            "similarity": similarity,
            "threshold": threshold,
            "same_person": similarity >= threshold,
        })
    );
    Ok(())
}

pub async fn bench(
    images: &[PathBuf],
    repeats: usize,
    out: &Path,
    ops: Option<usize>,
) -> anyhow::Result<()> {
    let config = FaceConfig::from_env()?;
    let engine = crate::startup::load_engine(&config).await?;
    let images = if images.is_empty() {
        let mut found: Vec<PathBuf> = std::fs::read_dir("tests/fixtures/photos")
            .context("no images given and tests/fixtures/photos is missing")?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        found.sort();
        found
    } else {
        images.to_vec()
    };
    let mut photos = Vec::new();
    for p in &images {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        photos.push((name, read(p)?));
    }
    let report = tokio::task::spawn_blocking(move || {
        let single = crate::face::bench::run_bench(&engine, &photos, repeats, 1)?;
        let dual = crate::face::bench::run_bench(&engine, &photos, repeats, 2)?;
        let ops = ops
            .map(|nodes| engine.profile_ops(repeats, nodes))
            .transpose()?;
        Ok::<_, crate::face::FaceError>(
            serde_json::json!({ "threads_1": single, "threads_2": dual, "ops": ops }),
        )
    })
    .await??;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("report written to {}", out.display());
    Ok(())
}

/// Image files of each identity folder under `dir/identities` (or `dir`), sorted.
fn labelled_images(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let root = if dir.join("identities").is_dir() {
        dir.join("identities")
    } else {
        dir.to_path_buf()
    };
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(&root).with_context(|| format!("cannot read {}", root.display()))?
    {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(entry.path())? {
            let path = file?.path();
            let ext = path
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if matches!(ext.as_str(), "jpg" | "jpeg" | "png" | "webp") {
                out.push((name.clone(), path));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub async fn eval(dir: &Path, far: f64, json: Option<&Path>) -> anyhow::Result<()> {
    let config = FaceConfig::from_env()?;
    let search_threshold = config.similarity_threshold;
    let engine = crate::startup::load_engine(&config).await?;
    let images = labelled_images(dir)?;
    anyhow::ensure!(!images.is_empty(), "no images under {}", dir.display());
    let total = images.len();
    let (faces, missed) = tokio::task::spawn_blocking(move || {
        let options = crate::face::AnalyzeOptions {
            max_faces: 1,
            min_face_px: 0,
            min_score: config.detection_threshold.get(),
            embed: true,
            largest_only: true,
        };
        let mut faces = Vec::new();
        let mut missed = Vec::new();
        for (name, path) in images {
            let found = std::fs::read(&path)
                .ok()
                .and_then(|bytes| engine.analyze(&bytes, &options).ok())
                .and_then(|a| a.faces.into_iter().find_map(|f| f.embedding));
            match found {
                Some(e) => faces.push((name, e)),
                None => missed.push(path.display().to_string()),
            }
        }
        (faces, missed)
    })
    .await?;
    let identity = crate::config::IdentityConfig::from_env()?;
    let (report, impostors) = crate::eval::evaluate(
        total,
        &faces,
        search_threshold.get(),
        identity.verify_threshold.get(),
    );
    print_report(&report, &missed);
    println!(
        "\nthreshold for FAR {far}: {:.4} (photo vs photo)",
        crate::eval::threshold_for(&impostors, far)
    );
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

fn print_report(r: &crate::eval::EvalReport, missed: &[String]) {
    println!(
        "{} images, {} with a face, {} identities",
        r.images, r.faces, r.identities
    );
    for m in missed {
        println!("  no face: {m}");
    }
    for (title, s) in [
        ("photo vs photo", &r.pairs),
        ("template vs probe", &r.template),
    ] {
        println!("\n{title}");
        println!(
            "  {:<9} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
            "", "n", "min", "p1", "p5", "median", "p95", "p99", "max"
        );
        for (label, d) in [("genuine", &s.genuine), ("impostor", &s.impostor)] {
            println!(
                "  {:<9} {:>6} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4}",
                label, d.count, d.min, d.p1, d.p5, d.median, d.p95, d.p99, d.max
            );
        }
        println!(
            "  EER {:.2}% at threshold {:.4}",
            s.eer * 100.0,
            s.eer_threshold
        );
        for a in &s.at_far {
            println!(
                "  FAR {:>6}: threshold {:.4}  TAR {:.2}%{}",
                a.far,
                a.threshold,
                a.tar * 100.0,
                if a.measurable {
                    ""
                } else {
                    "  (too few impostor pairs to measure this FAR)"
                }
            );
        }
    }
}

/// The full application state, without the HTTP server, for bulk commands.
async fn app_state() -> anyhow::Result<crate::startup::AppState> {
    app_state_with(Config::from_env()?).await
}

async fn app_state_with(config: Config) -> anyhow::Result<crate::startup::AppState> {
    crate::telemetry::init(config.app.log_format, config.app.debug);
    let db = db::connect_lazy(&config.database)?;
    let engine = crate::startup::load_engine(&config.face).await?;
    crate::startup::AppState::new(config, db, engine).await
}

pub async fn index_dir(
    dir: &Path,
    session: &str,
    tenant: &str,
    parallel: Option<usize>,
) -> anyhow::Result<()> {
    let session =
        crate::domain::SessionId::parse(session).map_err(|e| anyhow::anyhow!("--session {e}"))?;
    let tenant =
        crate::domain::TenantId::parse(tenant).map_err(|e| anyhow::anyhow!("--tenant {e}"))?;
    let files =
        crate::bulk::images_in(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let state = app_state().await?;
    let parallel = parallel.unwrap_or(state.config.face.inference_workers);
    let summary = crate::bulk::index_dir(&state, files, &tenant, &session, parallel).await;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    eprintln!(
        "{} photos: {} indexed ({} faces), {} unchanged, {} failed in {:.1}s",
        summary.photos,
        summary.indexed,
        summary.faces,
        summary.unchanged,
        summary.failed.len(),
        summary.seconds
    );
    anyhow::ensure!(
        summary.failed.is_empty(),
        "{} photos failed",
        summary.failed.len()
    );
    Ok(())
}

pub async fn gc(fix: bool, grace_secs: u64) -> anyhow::Result<()> {
    let state = app_state().await?;
    let report = crate::gc::run(&state, fix, std::time::Duration::from_secs(grace_secs)).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!(
        "{} objects, {} photo rows: {} orphan objects, {} rows without their object{}",
        report.objects,
        report.photo_rows,
        report.orphan_objects.len(),
        report.missing_objects.len(),
        if fix {
            " (fixed)"
        } else {
            "; run with --fix to repair"
        }
    );
    Ok(())
}

pub async fn db(action: DbAction) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let pool = db::pool_options(&config.database)
        .connect(config.database.url())
        .await
        .context("cannot connect to PostgreSQL")?;
    match action {
        DbAction::Stats { sample } => {
            let stats =
                crate::store::maintenance::stats(&pool, config.database.ivfflat_probes, sample)
                    .await?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
        }
        DbAction::Reindex { lists } => {
            let start = std::time::Instant::now();
            let lists = crate::store::maintenance::reindex(&pool, lists).await?;
            println!(
                "rebuilt {} with lists = {lists} in {:.1}s",
                crate::store::maintenance::IVFFLAT_INDEX,
                start.elapsed().as_secs_f64()
            );
        }
    }
    pool.close().await;
    Ok(())
}

pub async fn smoke(url: &str, api_key: &str, photos: &Path) -> anyhow::Result<()> {
    let photos = crate::smoke::Photos::from_dir(photos)?;
    let mut smoke = crate::smoke::Smoke::new(url, api_key)?;
    anyhow::ensure!(smoke.run(&photos).await?, "smoke checks failed");
    Ok(())
}

pub async fn loadtest(
    url: &str,
    api_key: &str,
    endpoint: crate::loadtest::Endpoint,
    concurrency: usize,
    duration: u64,
    photos: &Path,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=600).contains(&duration),
        "--duration must be 1-600 seconds"
    );
    anyhow::ensure!(
        (1..=512).contains(&concurrency),
        "--concurrency must be 1-512"
    );
    let photos = crate::smoke::Photos::from_dir(photos)?;
    let report = crate::loadtest::run(
        url,
        api_key,
        photos,
        endpoint,
        concurrency,
        std::time::Duration::from_secs(duration),
    )
    .await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

pub async fn reindex(
    model: Option<PathBuf>,
    sha256: Option<String>,
    tenant: Option<&str>,
    cleanup: bool,
) -> anyhow::Result<()> {
    let mut config = Config::from_env()?;
    if let Some(model) = model {
        config.face.embedder_model = model;
        config.face.embedder_sha256 = sha256;
    }
    let state = app_state_with(config).await?;
    if cleanup {
        let removed = crate::remodel::cleanup(&state).await?;
        println!(
            "removed {removed} faces of models other than {}",
            state.faces.engine().model_id()
        );
        return Ok(());
    }
    let tenant = tenant
        .map(crate::domain::TenantId::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--tenant {e}"))?;
    let summary = crate::remodel::reindex(&state, tenant.as_ref()).await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    anyhow::ensure!(
        summary.failed.is_empty(),
        "{} photos failed",
        summary.failed.len()
    );
    Ok(())
}
