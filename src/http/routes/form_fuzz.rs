//! Fuzz-style property tests of upload parsing (`form::read_form`): well-formed multipart
//! bodies must round-trip exactly; mutated or random multipart and JSON bodies must end in a
//! form or a 4xx error, never a panic or a 5xx, and the request's thread never holds much more
//! than the upload limit, whatever the body declares.

use actix_web::http::header;
use actix_web::test::TestRequest;
use actix_web::{web, FromRequest};
use proptest::prelude::*;

use super::form::{read_form, Form, IMAGE_FIELDS};
use crate::error::ApiError;
use facepass_face::fuzzing::{peak_bytes, runner};

/// A small limit, so that exceeding it is common among the generated bodies.
const LIMIT: usize = 4096;

/// Reads a body as the server would; `None` when reading does not finish (a complete body in
/// memory must always be answered).
fn read(content_type: &str, body: Vec<u8>) -> Option<Result<Form, ApiError>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let reading = async {
        let (req, mut payload) = TestRequest::post()
            .insert_header((header::CONTENT_TYPE, content_type))
            .set_payload(body)
            .to_http_parts();
        let payload = web::Payload::from_request(&req, &mut payload)
            .await
            .expect("payload");
        read_form(&req, payload, LIMIT).await
    };
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(5), reading)
            .await
            .ok()
    })
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    filename: Option<String>,
    data: Vec<u8>,
}

fn field() -> impl Strategy<Value = Field> {
    let name = prop_oneof![
        Just("file".to_owned()),
        Just("image".to_owned()),
        Just("session_id".to_owned()),
        Just("photo_id".to_owned()),
        Just("top_k".to_owned()),
        "[a-z_]{1,12}",
    ];
    (
        name,
        prop::option::of("[a-zA-Z0-9_.]{1,16}"),
        prop::collection::vec(any::<u8>(), 0..1500),
    )
        .prop_map(|(name, filename, data)| Field {
            name,
            filename,
            data,
        })
}

fn multipart_body(boundary: &str, fields: &[Field]) -> Vec<u8> {
    let mut body = Vec::new();
    for f in fields {
        body.extend(format!("--{boundary}\r\n").bytes());
        match &f.filename {
            Some(file) => body.extend(
                format!(
                    "Content-Disposition: form-data; name=\"{}\"; filename=\"{file}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n",
                    f.name
                )
                .bytes(),
            ),
            None => body.extend(
                format!(
                    "Content-Disposition: form-data; name=\"{}\"\r\n\r\n",
                    f.name
                )
                .bytes(),
            ),
        }
        body.extend(&f.data);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    body
}

/// What `read_form` must make of well-formed fields: Ok with every field, or the 4xx a
/// partner would expect (duplicate text field, text over 4 KB or not UTF-8, files over LIMIT).
fn expected_ok(fields: &[Field], boundary: &str) -> bool {
    let mut names = std::collections::HashSet::new();
    let mut file_bytes = 0;
    for f in fields {
        // Data that happens to contain the boundary line ends the part early.
        if f.data
            .windows(boundary.len() + 2)
            .any(|w| w.starts_with(b"--") && &w[2..] == boundary.as_bytes())
        {
            return false;
        }
        if IMAGE_FIELDS.contains(&f.name.as_str()) {
            file_bytes += f.data.len();
        } else if !names.insert(f.name.clone())
            || std::str::from_utf8(&f.data).is_err()
            || f.data.len() > 4096
        {
            return false;
        }
    }
    file_bytes <= LIMIT
}

fn check_outcome(
    what: &str,
    result: &Option<Result<Form, ApiError>>,
    peak: usize,
) -> Result<(), TestCaseError> {
    let Some(result) = result else {
        return Err(TestCaseError::fail(format!(
            "{what}: reading the body never finished"
        )));
    };
    if let Err(e) = result {
        let status = actix_web::ResponseError::status_code(e).as_u16();
        prop_assert!((400..500).contains(&status), "{what}: {status} {e:?}");
    }
    // The body itself (at most a few KB here) plus bounded parser buffers.
    prop_assert!(peak < 4 * LIMIT + (256 << 10), "{what}: held {peak} bytes");
    Ok(())
}

#[test]
fn well_formed_multipart_round_trips_or_gets_the_expected_4xx() {
    let strategy = ("[a-zA-Z0-9]{8,40}", prop::collection::vec(field(), 0..6));
    let round_trips = std::cell::Cell::new(0usize);
    let result = runner(256).run(&strategy, |(boundary, fields)| {
        let body = multipart_body(&boundary, &fields);
        let ct = format!("multipart/form-data; boundary={boundary}");
        let (result, peak) = peak_bytes(|| read(&ct, body));
        check_outcome("well-formed", &result, peak)?;
        let expect_ok = expected_ok(&fields, &boundary);
        match result.expect("checked") {
            Ok(form) if expect_ok => {
                round_trips.set(round_trips.get() + 1);
                for f in &fields {
                    if IMAGE_FIELDS.contains(&f.name.as_str()) {
                        prop_assert!(form.files(&[f.name.as_str()]).contains(&f.data.as_slice()));
                    } else {
                        prop_assert_eq!(form.text(&f.name).map(str::as_bytes), Some(&f.data[..]));
                    }
                }
            }
            Ok(_) => prop_assert!(false, "accepted a form that should be refused: {fields:?}"),
            Err(e) => prop_assert!(!expect_ok, "refused a valid form: {e:?}"),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let round_trips = round_trips.get();
    assert!(round_trips > 20, "only {round_trips} forms round-tripped");
}

#[derive(Debug, Clone)]
enum Damage {
    Truncate(u16),
    Overwrite(Vec<(usize, u8)>),
    Insert(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0u16..1000).prop_map(Damage::Truncate),
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..16).prop_map(Damage::Overwrite),
        (
            any::<usize>(),
            prop_oneof![
                Just(b"\r\n".to_vec()),
                Just(b"--".to_vec()),
                Just(b"\r\n\r\n".to_vec()),
                Just(b"Content-Disposition: form-data; name=\"file\"\r\n".to_vec()),
                prop::collection::vec(any::<u8>(), 1..32),
            ]
        )
            .prop_map(|(at, b)| Damage::Insert(at, b)),
    ]
}

#[test]
fn damaged_or_random_multipart_bodies_get_a_4xx_or_a_form_never_a_panic() {
    let strategy = (
        "[a-zA-Z0-9]{8,40}",
        prop::collection::vec(field(), 0..5),
        prop::collection::vec(damage(), 1..4),
        any::<bool>(),
    );
    let result = runner(384).run(&strategy, |(boundary, fields, damages, random)| {
        let mut body = if random {
            fields.iter().flat_map(|f| f.data.clone()).collect()
        } else {
            multipart_body(&boundary, &fields)
        };
        for d in &damages {
            if body.is_empty() {
                break;
            }
            let n = body.len();
            match d {
                Damage::Truncate(p) => body.truncate(n * *p as usize / 1000),
                Damage::Overwrite(edits) => edits.iter().for_each(|(at, b)| body[at % n] = *b),
                Damage::Insert(at, extra) => {
                    body.splice(at % n..at % n, extra.iter().copied());
                }
            }
        }
        let ct = format!("multipart/form-data; boundary={boundary}");
        let (result, peak) = peak_bytes(|| read(&ct, body));
        check_outcome(&format!("{damages:?}"), &result, peak)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn json_bodies_of_any_shape_get_a_4xx_or_a_form_never_a_panic() {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        "[A-Za-z0-9+/=]{0,200}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("image_b64".to_owned()),
                    Just("images".to_owned()),
                    "[a-z_]{1,10}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    let strategy = (
        value,
        prop::collection::vec(any::<u8>(), 0..64),
        any::<u8>(),
    );
    let result = runner(384).run(&strategy, |(value, junk, how)| {
        let mut body = serde_json::to_vec(&value).expect("json");
        if how % 4 == 0 {
            body.extend(&junk); // trailing junk: invalid JSON
        } else if how % 4 == 1 {
            body = junk; // not JSON at all
        }
        let (result, peak) = peak_bytes(|| read("application/json", body));
        check_outcome("json", &result, peak)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
