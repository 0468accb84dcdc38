//! Reading uploads: `multipart/form-data` or a JSON body with base64 images. Both become one
//! `Form`, so every route accepts both the same way. Sizes are checked while reading: a body
//! over the limit is refused with 413 as soon as that is known, never buffered whole.

use std::collections::HashMap;

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{web, HttpRequest};
use base64::Engine;
use futures_util::StreamExt;

use crate::error::{ApiError, Code};

/// Longest text field accepted (ids are at most 128 characters; this leaves room for JSON).
const MAX_TEXT_FIELD: usize = 4096;
/// Most fields a form may carry: enough for an enrollment, far from abuse.
const MAX_FIELDS: usize = 64;

pub struct Upload {
    pub field: String,
    pub bytes: Vec<u8>,
}

#[derive(Default)]
pub struct Form {
    text: HashMap<String, String>,
    files: Vec<Upload>,
}

impl Form {
    /// A text field, or None when absent.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.text.get(name).map(String::as_str)
    }

    pub fn require_text(&self, name: &str) -> Result<&str, ApiError> {
        self.text(name).ok_or_else(|| ApiError::missing_field(name))
    }

    /// A number field parsed as T, or None when absent.
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ApiError::invalid_field(name, "is not a valid number")),
        }
    }

    /// Exactly one file under one of `names`.
    pub fn one_file(&self, names: &[&str]) -> Result<&[u8], ApiError> {
        let mut found = self
            .files
            .iter()
            .filter(|f| names.contains(&f.field.as_str()));
        match (found.next(), found.next()) {
            (Some(f), None) => Ok(&f.bytes),
            (None, _) => Err(ApiError::missing_field(names[0])),
            (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
                "`{}` was sent more than once",
                names[0]
            ))),
        }
    }

    /// Every file under one of `names`, in the order sent.
    pub fn files(&self, names: &[&str]) -> Vec<&[u8]> {
        self.files
            .iter()
            .filter(|f| names.contains(&f.field.as_str()))
            .map(|f| f.bytes.as_slice())
            .collect()
    }

    fn add_text(&mut self, name: String, value: String) -> Result<(), ApiError> {
        if self.text.contains_key(&name) {
            return Err(ApiError::bad_request(format!(
                "`{name}` was sent more than once"
            )));
        }
        self.check_count()?;
        self.text.insert(name, value);
        Ok(())
    }

    fn add_file(&mut self, field: String, bytes: Vec<u8>) -> Result<(), ApiError> {
        self.check_count()?;
        self.files.push(Upload { field, bytes });
        Ok(())
    }

    fn check_count(&self) -> Result<(), ApiError> {
        if self.text.len() + self.files.len() >= MAX_FIELDS {
            return Err(ApiError::bad_request(format!(
                "more than {MAX_FIELDS} form fields"
            )));
        }
        Ok(())
    }
}

/// Field names whose values are images (files in multipart, base64 strings in JSON).
pub const IMAGE_FIELDS: &[&str] = &["file", "image", "images", "image_b64", "images_b64"];

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        Code::PayloadTooLarge,
        format!("the upload exceeds {} MB", limit >> 20),
    )
}

/// Reads the request body as a form, refusing more than `limit` bytes of files.
pub async fn read_form(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Form, ApiError> {
    // base64 grows data by 4/3; multipart adds headers. Allow for both, then count files exactly.
    let body_limit = limit / 3 * 4 + 64 * 1024;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > body_limit) {
        return Err(too_large(limit));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        read_multipart(req, payload, limit).await
    } else if content_type.starts_with("application/json") {
        read_json(payload, body_limit, limit).await
    } else {
        Err(ApiError::new(
            Code::UnsupportedMediaType,
            "send multipart/form-data or application/json",
        ))
    }
}

async fn read_multipart(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Form, ApiError> {
    let mut multipart = Multipart::new(req.headers(), payload);
    let mut form = Form::default();
    let mut file_bytes = 0usize;
    while let Some(field) = multipart.next().await {
        let mut field =
            field.map_err(|e| ApiError::bad_request(format!("invalid multipart body: {e}")))?;
        let name = field.name().unwrap_or_default().to_owned();
        if name.is_empty() {
            return Err(ApiError::bad_request("a multipart field has no name"));
        }
        let is_file = IMAGE_FIELDS.contains(&name.as_str());
        let mut data = Vec::new();
        let cap = if is_file {
            limit - file_bytes.min(limit)
        } else {
            MAX_TEXT_FIELD
        };
        while let Some(chunk) = field.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request(format!("invalid multipart body: {e}")))?;
            if data.len() + chunk.len() > cap {
                return Err(if is_file {
                    too_large(limit)
                } else {
                    ApiError::invalid_field(&name, format!("is longer than {MAX_TEXT_FIELD} bytes"))
                });
            }
            data.extend_from_slice(&chunk);
        }
        if is_file {
            file_bytes += data.len();
            form.add_file(name, data)?;
        } else {
            let text = String::from_utf8(data)
                .map_err(|_| ApiError::invalid_field(&name, "is not valid UTF-8"))?;
            form.add_text(name, text)?;
        }
    }
    Ok(form)
}

async fn read_json(
    mut payload: web::Payload,
    body_limit: usize,
    limit: usize,
) -> Result<Form, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
        if body.len() + chunk.len() > body_limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(ApiError::bad_request("the JSON body must be an object"));
    };
    let mut form = Form::default();
    let mut file_bytes = 0usize;
    for (name, value) in map {
        if IMAGE_FIELDS.contains(&name.as_str()) {
            let items = match value {
                serde_json::Value::String(s) => vec![s],
                serde_json::Value::Array(items) => items
                    .into_iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => Ok(s),
                        _ => Err(ApiError::invalid_field(&name, "must hold base64 strings")),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(ApiError::invalid_field(&name, "must be a base64 string")),
            };
            for item in items {
                let bytes = decode_base64(&item).ok_or_else(|| {
                    ApiError::invalid_field(&name, "is not valid base64 image data")
                })?;
                file_bytes += bytes.len();
                if file_bytes > limit {
                    return Err(too_large(limit));
                }
                form.add_file(name.clone(), bytes)?;
            }
        } else {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => continue,
                _ => {
                    return Err(ApiError::invalid_field(
                        &name,
                        "must be a string or a number",
                    ))
                }
            };
            if text.len() > MAX_TEXT_FIELD {
                return Err(ApiError::invalid_field(
                    &name,
                    format!("is longer than {MAX_TEXT_FIELD} bytes"),
                ));
            }
            form.add_text(name, text)?;
        }
    }
    Ok(form)
}

/// Standard base64 (padding optional), with or without a `data:image/...;base64,` prefix.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    let s = match s.strip_prefix("data:") {
        Some(rest) => rest.split_once(";base64,")?.1,
        None => s,
    };
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_accepts_data_urls_and_missing_padding() {
        assert_eq!(decode_base64("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode_base64("aGk").as_deref(), Some(&b"hi"[..]));
        assert_eq!(
            decode_base64("data:image/png;base64,aGk=").as_deref(),
            Some(&b"hi"[..])
        );
        assert_eq!(decode_base64(" aG\nk= ").as_deref(), Some(&b"hi"[..]));
    }

    #[test]
    fn base64_rejects_garbage() {
        for bad in ["not base64!", "data:image/png,aGk=", "%%%%", "a"] {
            assert!(decode_base64(bad).is_none(), "{bad}");
        }
    }
}
