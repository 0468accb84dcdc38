//! Graceful shutdown of the real binary: SIGTERM while requests are in flight.

use std::collections::HashMap;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::helpers::photo;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn database_url(db: &str) -> String {
    let mut url =
        url::Url::parse(&std::env::var("DATABASE_URL").expect("DATABASE_URL")).expect("url");
    url.set_path(db);
    url.to_string()
}

async fn in_flight(client: &reqwest::Client, base: &str) -> f64 {
    let Ok(resp) = client.get(format!("{base}/api/v2/metrics")).send().await else {
        return 0.0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("facepass_inferences_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[sqlx::test]
async fn sigterm_finishes_requests_in_flight_refuses_new_ones_and_closes_the_pool(pool: PgPool) {
    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&pool)
        .await
        .expect("db name");
    let port = free_port();
    let key = format!("key-{}", uuid::Uuid::new_v4().simple());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let root = env!("CARGO_MANIFEST_DIR");
    let log_path = std::env::temp_dir().join(format!("facepass-shutdown-{run}.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let vars: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", database_url(&db)),
        ("HOST", "127.0.0.1".into()),
        ("PORT", port.to_string()),
        ("API_KEYS", format!("tenant-a:{key}")),
        ("S3_BUCKET", "facepass-test".into()),
        ("S3_KEY_PREFIX", format!("run-{run}/")),
        ("REDIS_KEY_PREFIX", format!("test:{run}")),
        (
            "FACE_DETECTOR_MODEL",
            format!("{root}/models/scrfd_500m_bnkps.onnx"),
        ),
        (
            "FACE_EMBEDDER_MODEL",
            format!("{root}/models/w600k_mbf.onnx"),
        ),
        // One engine worker: the three uploads below queue behind each other, so they are
        // still in flight when the signal comes.
        ("INFERENCE_WORKERS", "1".into()),
        ("HTTP_WORKERS", "1".into()),
        ("SHUTDOWN_TIMEOUT_SECS", "60".into()),
        ("LOG_FORMAT", "json".into()),
        ("RUST_LOG", "info".into()),
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_facepass"))
        .arg("serve")
        .envs(&vars)
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("facepass serve starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client
        .get(format!("{base}/api/v2/health"))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server did not come up: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let uploads: Vec<_> = ["solvay_conference_1927.jpg", "players.jpg", "gdp.jpg"]
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let client = client.clone();
            let url = format!("{base}/api/v2/index");
            let key = key.clone();
            tokio::spawn(async move {
                let form = reqwest::multipart::Form::new()
                    .text("session_id", "shutdown")
                    .text("photo_id", format!("p{i}"))
                    .part(
                        "file",
                        reqwest::multipart::Part::bytes(photo(name)).file_name(name),
                    );
                let resp = client
                    .post(url)
                    .header("X-API-Key", key)
                    .multipart(form)
                    .send()
                    .await;
                (resp.map(|r| r.status().as_u16()), Instant::now())
            })
        })
        .collect();
    while in_flight(&client, &base).await < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no upload started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let signalled = Instant::now();
    let refused_at = loop {
        if TcpStream::connect(("127.0.0.1", port)).is_err() {
            break Instant::now();
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "the listener still accepts connections 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let mut last_answer = signalled;
    for upload in uploads {
        let (status, at) = upload.await.expect("upload task");
        assert_eq!(
            status.expect("an upload in flight got an answer"),
            200,
            "an upload in flight was not finished"
        );
        last_answer = last_answer.max(at);
    }
    assert!(
        refused_at < last_answer,
        "new connections were refused only after the uploads in flight had finished"
    );

    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(60),
            "server still running 60 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(&log_path).expect("log");
    let _ = std::fs::remove_file(&log_path);
    assert!(exit.success(), "exit status {exit}: {log}");
    assert!(log.contains("database pool closed"), "{log}");

    // Every upload finished is committed: three photos, all with their faces.
    let photos: Vec<(String, i64)> = sqlx::query_as(
        "select p.photo_id, count(f.*) from photo p left join face f on f.photo_pk = p.photo_pk \
         group by p.photo_id order by p.photo_id",
    )
    .fetch_all(&pool)
    .await
    .expect("photos");
    assert_eq!(photos.len(), 3, "{photos:?}");
    assert!(photos.iter().all(|(_, faces)| *faces > 0), "{photos:?}");
}
