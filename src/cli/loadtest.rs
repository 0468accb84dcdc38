//! `facepass loadtest`: a bounded load against a live server (search, verify or index), with
//! latency percentiles, throughput and errors by code. It prepares what it needs (a session with
//! indexed photos, an enrolled identity) under throw-away ids and deletes them afterwards.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use reqwest::Client;
use serde::Serialize;

use crate::cli::smoke::Photos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Search,
    Verify,
    Index,
    /// Search, verify and index in turn (a third each), as a soak test.
    Mixed,
}

impl Endpoint {
    /// The endpoint the `n`th request of a run goes to.
    fn pick(self, n: usize) -> Endpoint {
        match (self, n % 3) {
            (Endpoint::Mixed, 0) => Endpoint::Search,
            (Endpoint::Mixed, 1) => Endpoint::Verify,
            (Endpoint::Mixed, _) => Endpoint::Index,
            (one, _) => one,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Endpoint::Search => "search",
            Endpoint::Verify => "verify",
            Endpoint::Index => "index",
            Endpoint::Mixed => "mixed",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub endpoint: Endpoint,
    pub concurrency: usize,
    pub seconds: f64,
    pub requests: usize,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub error_rate: f64,
    /// Responses other than 2xx by status and code (`transport` when no response came).
    pub errors: BTreeMap<String, usize>,
    /// The same figures per endpoint (one entry unless the run was `mixed`).
    pub per_endpoint: BTreeMap<&'static str, EndpointFigures>,
}

#[derive(Debug, Serialize)]
pub struct EndpointFigures {
    pub requests: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub failed: usize,
}

struct Target {
    client: Client,
    url: String,
    key: String,
    session: String,
    identity: String,
    photos: Photos,
}

fn part(bytes: &[u8]) -> Part {
    Part::bytes(bytes.to_vec()).file_name("photo.jpg")
}

impl Target {
    async fn request(
        &self,
        endpoint: Endpoint,
        n: usize,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let req = match endpoint.pick(n) {
            Endpoint::Search | Endpoint::Mixed => self
                .client
                .post(format!("{}/api/v2/search", self.url))
                .multipart(
                    Form::new()
                        .text("session_id", self.session.clone())
                        .part("file", part(&self.photos.probe)),
                ),
            Endpoint::Verify => self
                .client
                .post(format!(
                    "{}/api/v2/identities/{}/verify",
                    self.url, self.identity
                ))
                .multipart(Form::new().part("image", part(&self.photos.probe))),
            Endpoint::Index => {
                let photo = &self.photos.enroll[n % self.photos.enroll.len()];
                self.client
                    .post(format!("{}/api/v2/index", self.url))
                    .multipart(
                        Form::new()
                            .text("session_id", self.session.clone())
                            .text("photo_id", format!("load-{n}"))
                            .part("file", part(photo)),
                    )
            }
        };
        req.header("X-API-Key", &self.key).send().await
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[derive(Debug, clap::Args)]
pub struct LoadtestArgs {
    #[arg(long)]
    url: String,
    #[arg(long, env = "FACEPASS_API_KEY", hide_env_values = true)]
    api_key: String,
    #[arg(long, value_enum)]
    endpoint: Endpoint,
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=512))]
    concurrency: u16,
    /// Seconds of load (at most 600).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    duration: u64,
    #[arg(long, default_value = "tests/fixtures/photos")]
    photos: PathBuf,
}

pub async fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    let photos = Photos::from_dir(&args.photos)?;
    let report = load(&args, photos).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn load(args: &LoadtestArgs, photos: Photos) -> anyhow::Result<LoadReport> {
    let (endpoint, concurrency) = (args.endpoint, usize::from(args.concurrency));
    let duration = Duration::from_secs(args.duration);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let target = Arc::new(Target {
        client: Client::builder().timeout(Duration::from_secs(60)).build()?,
        url: args.url.trim_end_matches('/').to_owned(),
        key: args.api_key.clone(),
        session: format!("load-{}", &run[..12]),
        identity: format!("load-{}", &run[12..24]),
        photos,
    });
    prepare(&target).await?;

    let start = Instant::now();
    let deadline = start + duration;
    let workers = (0..concurrency.max(1)).map(|w| {
        let target = target.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors: BTreeMap<String, usize> = BTreeMap::new();
            let mut n = w;
            while Instant::now() < deadline {
                let t = Instant::now();
                let result = target.request(endpoint, n).await;
                let ok = matches!(&result, Ok(r) if r.status().is_success());
                latencies.push((
                    endpoint.pick(n).name(),
                    t.elapsed().as_secs_f64() * 1000.0,
                    ok,
                ));
                n += concurrency.max(1);
                match result {
                    Ok(_) if ok => {}
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        let code = body["code"].as_str().unwrap_or("unknown").to_owned();
                        *errors.entry(format!("{status} {code}")).or_default() += 1;
                    }
                    Err(_) => *errors.entry("transport".to_owned()).or_default() += 1,
                }
            }
            (latencies, errors)
        })
    });
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for w in futures_util::future::join_all(workers).await {
        let (l, e) = w?;
        latencies.extend(l);
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    cleanup(&target).await;
    // Per endpoint: latencies and failures, grouped in one pass.
    let mut grouped: BTreeMap<&'static str, (Vec<f64>, usize)> = BTreeMap::new();
    for &(name, ms, ok) in &latencies {
        let entry = grouped.entry(name).or_default();
        entry.0.push(ms);
        entry.1 += usize::from(!ok);
    }
    let per_endpoint = grouped
        .into_iter()
        .map(|(name, (mut mine, failed))| {
            mine.sort_by(f64::total_cmp);
            let figures = EndpointFigures {
                requests: mine.len(),
                p50_ms: percentile(&mine, 0.5),
                p95_ms: percentile(&mine, 0.95),
                p99_ms: percentile(&mine, 0.99),
                failed,
            };
            (name, figures)
        })
        .collect();
    let mut latencies: Vec<f64> = latencies.into_iter().map(|l| l.1).collect();
    latencies.sort_by(f64::total_cmp);
    let failed: usize = errors.values().sum();
    Ok(LoadReport {
        endpoint,
        concurrency,
        seconds,
        requests: latencies.len(),
        throughput_per_s: latencies.len() as f64 / seconds,
        p50_ms: percentile(&latencies, 0.5),
        p95_ms: percentile(&latencies, 0.95),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        error_rate: failed as f64 / latencies.len().max(1) as f64,
        errors,
        per_endpoint,
    })
}

/// Sends a request with the key and fails with `what` unless the answer is a success.
async fn expect_success(
    t: &Target,
    req: reqwest::RequestBuilder,
    what: &str,
) -> anyhow::Result<()> {
    let resp = req.header("X-API-Key", &t.key).send().await?;
    anyhow::ensure!(resp.status().is_success(), "{what}: {}", resp.status());
    Ok(())
}

/// A session with the enrollment photos indexed and an identity enrolled from them.
async fn prepare(t: &Target) -> anyhow::Result<()> {
    for (i, photo) in t.photos.enroll.iter().enumerate() {
        let form = Form::new()
            .text("session_id", t.session.clone())
            .text("photo_id", format!("seed-{i}"))
            .part("file", part(photo));
        let req = t.client.post(format!("{}/api/v2/index", t.url));
        expect_success(t, req.multipart(form), "seeding the session").await?;
    }
    let mut form = Form::new();
    for photo in &t.photos.enroll {
        form = form.part("images", part(photo));
    }
    let req = t
        .client
        .put(format!("{}/api/v2/identities/{}", t.url, t.identity));
    expect_success(t, req.multipart(form), "enrolling the identity").await
}

async fn cleanup(t: &Target) {
    for path in [
        format!("/api/v2/sessions/{}", t.session),
        format!("/api/v2/identities/{}", t.identity),
    ] {
        let _ = t
            .client
            .delete(format!("{}{path}", t.url))
            .header("X-API-Key", &t.key)
            .send()
            .await;
    }
}
