//! HTTP routes, one module per resource: each turns a request into a workflow call and its
//! result into a response (`form` reads multipart and JSON bodies for all of them). Imports
//! `workflows`, `store` (for plain reads and deletions), `domain`, `state` and `http::auth`.

use actix_web::dev::ResourceDef;
use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};
use utoipa::openapi::OpenApi;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::error::{ApiError, Code};

pub mod form;
#[cfg(test)]
mod form_fuzz;
pub mod health;
pub mod identities;
pub mod index;
pub mod photos;
pub mod search;
pub mod sessions;
pub mod v1;

/// Everything under /api/v2.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(health::health)
        .service(health::ready)
        .service(health::metrics)
        .service(index::index)
        .service(search::search)
        .service(sessions::get_session)
        .service(sessions::delete_session)
        .service(photos::get_photo)
        .service(photos::delete_photo)
        .service(identities::identify)
        .service(identities::list)
        .service(identities::enroll)
        .service(identities::verify)
        .service(identities::get)
        .service(identities::remove)
        .service(identities::photos)
        // Registered with `route`, so the document does not list itself.
        .route("/openapi.json", web::get().to(openapi_json));
}

/// The /api/v1 compatibility routes.
pub fn configure_v1(cfg: &mut ServiceConfig) {
    cfg.service(v1::health)
        .service(v1::enroll_identity)
        .service(v1::verify)
        .service(v1::search);
}

async fn openapi_json(spec: web::Data<OpenApi>) -> HttpResponse {
    HttpResponse::Ok().json(spec.get_ref())
}

/// A partner id from a form field: missing is 422 `missing_field`, malformed 422 `invalid_field`.
pub fn parse_id<T: From<crate::domain::ExternalId>>(
    form: &form::Form,
    field: &str,
) -> Result<T, ApiError> {
    let raw = form.require_text(field)?;
    crate::domain::ExternalId::parse(raw)
        .map(T::from)
        .map_err(|e| ApiError::invalid_field(field, e))
}

/// Path templates and their methods, read from the OpenAPI document, so that a known path with
/// the wrong method gets 405 (actix alone answers 404 when method guards do not match).
pub struct RouteTable {
    routes: Vec<(ResourceDef, Vec<Method>)>,
}

impl RouteTable {
    pub fn from_spec(spec: &OpenApi) -> Self {
        let routes = spec
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let mut methods = Vec::new();
                let ops = [
                    (Method::GET, item.get.is_some()),
                    (Method::POST, item.post.is_some()),
                    (Method::PUT, item.put.is_some()),
                    (Method::DELETE, item.delete.is_some()),
                    (Method::PATCH, item.patch.is_some()),
                ];
                for (m, present) in ops {
                    if present {
                        methods.push(m);
                    }
                }
                (ResourceDef::new(path.as_str()), methods)
            })
            .collect();
        Self { routes }
    }

    fn allowed(&self, path: &str) -> Option<&[Method]> {
        self.routes
            .iter()
            .find(|(def, _)| def.is_match(path))
            .map(|(_, m)| m.as_slice())
    }
}

/// The default service: JSON 405 for a known path, JSON 404 otherwise.
pub async fn fallback(req: HttpRequest, table: web::Data<RouteTable>) -> HttpResponse {
    use actix_web::ResponseError;
    match table.allowed(req.path()) {
        Some(methods) if !methods.contains(req.method()) => {
            let allow = methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut resp = ApiError::new(
                Code::MethodNotAllowed,
                format!("{} is not allowed here; allowed: {allow}", req.method()),
            )
            .error_response();
            if let Ok(v) = header::HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            resp
        }
        _ => ApiError::new(Code::NotFound, format!("no route for {}", req.path())).error_response(),
    }
}
