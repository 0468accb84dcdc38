//! The HTTP edge: routes turn requests into workflow calls and results into responses; auth,
//! middleware and the OpenAPI document around them. Imports `state`, `workflows`, `store` and
//! `domain`; nothing but `startup` imports this.

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{http as ax, web, App, HttpServer};
use std::net::TcpListener;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::error::{ApiError, Code};
use crate::state::AppState;
use openapi::{ApiDoc, SPEC_PATH};
use routes::RouteTable;

pub mod auth;
pub mod middleware;
pub mod openapi;
pub mod routes;

/// The whole API, and the OpenAPI document generated from the same list of handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .service(utoipa_actix_web::scope("/api/v2").configure(routes::configure))
        .service(utoipa_actix_web::scope("/api/v1").configure(routes::configure_v1))
        .split_for_parts()
        .1
}

/// The HTTP server on `listener`, with every route, the middleware and Swagger UI.
pub fn server(state: AppState, listener: TcpListener, config: &Config) -> anyhow::Result<Server> {
    let max_upload = config.http.max_upload_bytes;
    let cors_origins = config.http.cors_origins.clone();
    let data = web::Data::new(state);
    let spec = web::Data::new(openapi());
    let table = web::Data::new(RouteTable::from_spec(&spec));
    let server = HttpServer::new(move || {
        let (app, _) = App::new()
            .app_data(data.clone())
            .app_data(table.clone())
            .app_data(json_config(max_upload))
            .app_data(query_config())
            .app_data(path_config())
            .wrap(middleware::json_errors())
            .wrap(cors(&cors_origins))
            .wrap(middleware::security_headers())
            .wrap(from_fn(middleware::request_context))
            .into_utoipa_app()
            .openapi(ApiDoc::openapi())
            .service(utoipa_actix_web::scope("/api/v2").configure(routes::configure))
            .service(utoipa_actix_web::scope("/api/v1").configure(routes::configure_v1))
            .split_for_parts();
        // The spec is served by its own route inside the /api/v2 scope (a scope answers every
        // path under it); Swagger UI only points at it.
        app.app_data(spec.clone())
            .service(
                SwaggerUi::new("/docs/{_:.*}").config(utoipa_swagger_ui::Config::from(SPEC_PATH)),
            )
            .service(web::redirect("/docs", "/docs/"))
            .default_service(web::to(routes::fallback))
    })
    .workers(config.app.workers)
    .shutdown_timeout(config.app.shutdown_timeout.as_secs())
    .listen(listener)?
    .run();
    Ok(server)
}

fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "DELETE"])
        .allowed_headers([
            ax::header::CONTENT_TYPE,
            ax::header::ACCEPT,
            ax::header::HeaderName::from_static(auth::API_KEY_HEADER),
            ax::header::HeaderName::from_static(auth::TENANT_HEADER),
            middleware::REQUEST_ID,
        ])
        .expose_headers([middleware::REQUEST_ID, ax::header::RETRY_AFTER])
        .max_age(3600);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as E;
            let api = match &err {
                E::OverflowKnownLength { .. } | E::Overflow { .. } => {
                    ApiError::new(Code::PayloadTooLarge, err.to_string())
                }
                E::ContentType => ApiError::new(
                    Code::UnsupportedMediaType,
                    "expected Content-Type: application/json",
                ),
                _ => ApiError::bad_request(format!("invalid JSON body: {err}")),
            };
            api.into()
        })
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _req| ApiError::bad_request(format!("invalid query: {err}")).into())
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|err, _req| ApiError::bad_request(format!("invalid path: {err}")).into())
}
