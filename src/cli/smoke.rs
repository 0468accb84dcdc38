//! `facepass smoke --url URL --api-key KEY`: the deployment checklist, run against a live server.
//! One pass/fail line per check; everything it creates lives under a throw-away session and
//! identity and is deleted at the end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct SmokeArgs {
    #[arg(long)]
    url: String,
    #[arg(long, env = "FACEPASS_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Folder with obama.jpg, obama2.jpg, obama3.jpg, 32bit.png and biden.jpg.
    #[arg(long, default_value = "tests/fixtures/photos")]
    photos: PathBuf,
}

pub async fn run(args: SmokeArgs) -> anyhow::Result<()> {
    let photos = Photos::from_dir(&args.photos)?;
    let mut smoke = Smoke::new(&args.url, &args.api_key)?;
    anyhow::ensure!(smoke.run(&photos).await?, "smoke checks failed");
    Ok(())
}

pub struct Smoke {
    client: Client,
    url: String,
    key: String,
    passed: usize,
    failed: usize,
}

/// Photos the checks use: three of one person to enroll, a fourth to search and verify with,
/// one of somebody else.
pub struct Photos {
    pub enroll: [Vec<u8>; 3],
    pub probe: Vec<u8>,
    pub other: Vec<u8>,
}

impl Photos {
    /// The fixture photos fetched by scripts/fetch-fixtures.sh.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Photos> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e} (run scripts/fetch-fixtures.sh)",
                    dir.join(name).display()
                )
            })
        };
        Ok(Photos {
            enroll: [read("obama.jpg")?, read("obama2.jpg")?, read("32bit.png")?],
            probe: read("obama3.jpg")?,
            other: read("biden.jpg")?,
        })
    }
}

fn part(bytes: &[u8]) -> Part {
    Part::bytes(bytes.to_vec()).file_name("photo.jpg")
}

async fn json(resp: Response) -> (StatusCode, bool, Value) {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, is_json, body)
}

impl Smoke {
    pub fn new(url: &str, key: &str) -> anyhow::Result<Smoke> {
        Ok(Smoke {
            client: Client::builder().timeout(Duration::from_secs(60)).build()?,
            url: url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            passed: 0,
            failed: 0,
        })
    }

    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            self.passed += 1;
            println!("PASS  {name}");
        } else {
            self.failed += 1;
            println!("FAIL  {name}: {detail}");
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Option<Response> {
        req.header("X-API-Key", &self.key).send().await.ok()
    }

    /// Runs every check; Ok(true) when all passed.
    pub async fn run(&mut self, photos: &Photos) -> anyhow::Result<bool> {
        let base = self.url.clone();
        let u = |p: &str| format!("{base}{p}");
        let run = uuid::Uuid::new_v4().simple().to_string();
        let session = format!("smoke-{}", &run[..12]);
        let identity = format!("smoke-{}", &run[12..24]);

        let r = self.client.get(u("/api/v2/health")).send().await;
        let ok = r.as_ref().is_ok_and(|r| r.status() == 200);
        self.check(
            "health answers 200",
            ok,
            format!("{:?}", r.map(|r| r.status())),
        );

        let r = self.client.get(u("/api/v2/ready")).send().await;
        match r {
            Ok(r) => {
                let (status, _, body) = json(r).await;
                self.check(
                    "ready answers 200",
                    status == 200,
                    format!("{status} {body}"),
                );
            }
            Err(e) => self.check("ready answers 200", false, e),
        }

        let r = self.client.get(u("/docs/")).send().await;
        let ok = r.as_ref().is_ok_and(|r| r.status() == 200);
        self.check("/docs loads", ok, format!("{:?}", r.map(|r| r.status())));

        let spec = match self.client.get(u("/api/v2/openapi.json")).send().await {
            Ok(r) => r.json::<Value>().await.ok(),
            Err(_) => None,
        };
        let ok = spec.as_ref().is_some_and(|s| s["paths"].is_object());
        self.check("openapi.json parses", ok, "no paths object");

        let form = Form::new()
            .text("session_id", session.clone())
            .text("photo_id", "smoke-photo")
            .part("file", part(&photos.probe));
        match self
            .send(self.client.post(u("/api/v2/index")).multipart(form))
            .await
        {
            Some(r) => {
                let (status, is_json, body) = json(r).await;
                let faces = body["faces"].as_array().map_or(0, Vec::len);
                self.check(
                    "index a photo into a throw-away session",
                    status == 200 && is_json && faces >= 1,
                    format!("{status} {body}"),
                );
            }
            None => self.check(
                "index a photo into a throw-away session",
                false,
                "no answer",
            ),
        }

        let form = Form::new()
            .text("session_id", session.clone())
            .part("file", part(&photos.enroll[0]));
        match self
            .send(self.client.post(u("/api/v2/search")).multipart(form))
            .await
        {
            Some(r) => {
                let (status, _, body) = json(r).await;
                let found = body["results"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|h| h["photo_id"] == "smoke-photo"));
                self.check(
                    "search finds it",
                    status == 200 && found,
                    format!("{status} {body}"),
                );
            }
            None => self.check("search finds it", false, "no answer"),
        }

        let mut form = Form::new();
        for img in &photos.enroll {
            form = form.part("images", part(img));
        }
        let path = format!("/api/v2/identities/{identity}");
        match self.send(self.client.put(u(&path)).multipart(form)).await {
            Some(r) => {
                let (status, _, body) = json(r).await;
                self.check(
                    "enroll an identity",
                    status == 200,
                    format!("{status} {body}"),
                );
            }
            None => self.check("enroll an identity", false, "no answer"),
        }
        for (name, img, want) in [
            ("verify the same person: true", &photos.probe, true),
            ("verify another person: false", &photos.other, false),
        ] {
            let form = Form::new().part("image", part(img));
            let path = format!("/api/v2/identities/{identity}/verify");
            match self.send(self.client.post(u(&path)).multipart(form)).await {
                Some(r) => {
                    let (status, _, body) = json(r).await;
                    self.check(
                        name,
                        status == 200 && body["verified"] == want,
                        format!("{status} {body}"),
                    );
                }
                None => self.check(name, false, "no answer"),
            }
        }

        let form = Form::new().part("image", part(&photos.probe));
        let path = format!("/api/v2/identities/{identity}-unknown/verify");
        match self.send(self.client.post(u(&path)).multipart(form)).await {
            Some(r) => {
                let (status, _, body) = json(r).await;
                self.check(
                    "unknown identity is 404",
                    status == 404 && body["code"] == "identity_not_enrolled",
                    format!("{status} {body}"),
                );
            }
            None => self.check("unknown identity is 404", false, "no answer"),
        }

        let r = self
            .client
            .get(u(&format!("/api/v2/sessions/{session}")))
            .send()
            .await;
        match r {
            Ok(r) => {
                let (status, is_json, body) = json(r).await;
                self.check(
                    "missing key is 401",
                    status == 401 && is_json && body["code"] == "missing_api_key",
                    format!("{status} {body}"),
                );
            }
            Err(e) => self.check("missing key is 401", false, e),
        }
        match self.send(self.client.get(u("/api/v2/no-such-route"))).await {
            Some(r) => {
                let (status, is_json, _) = json(r).await;
                self.check(
                    "unknown route is a JSON 404",
                    status == 404 && is_json,
                    status,
                );
            }
            None => self.check("unknown route is a JSON 404", false, "no answer"),
        }
        match self.send(self.client.delete(u("/api/v2/health"))).await {
            Some(r) => {
                let (status, is_json, _) = json(r).await;
                self.check(
                    "wrong method is a JSON 405",
                    status == 405 && is_json,
                    status,
                );
            }
            None => self.check("wrong method is a JSON 405", false, "no answer"),
        }

        // Clean up, and check that the clean-up worked.
        let gone_identity = self
            .send(
                self.client
                    .delete(u(&format!("/api/v2/identities/{identity}"))),
            )
            .await
            .is_some_and(|r| r.status() == 204);
        let gone_session = self
            .send(
                self.client
                    .delete(u(&format!("/api/v2/sessions/{session}"))),
            )
            .await
            .is_some_and(|r| r.status() == 204);
        self.check(
            "delete what the checks created",
            gone_identity && gone_session,
            format!("identity deleted: {gone_identity}, session deleted: {gone_session}"),
        );
        println!("{} passed, {} failed", self.passed, self.failed);
        Ok(self.failed == 0)
    }
}
