//! Every public route of ingress, registered and documented from one list: [`public_api`].
//!
//! Each route goes in with `utoipa_axum::routes!`, which reads the handler's `#[utoipa::path]`
//! for both the axum route (path and method) and its operation in the OpenAPI document. So a
//! route cannot be served without being documented, nor documented at a path or method it is
//! not served at. [`Documented`] is the only way into the list, and it has no `route()`: a
//! handler without `#[utoipa::path]` does not compile there.
//!
//! Not in the public document, on purpose: `/healthz`, `/readyz` and `/metrics` are served on
//! the operator's port (`admin_addr`, `carrier_telemetry::serve_probes` in `run`), never here.
//! The console's static files (`/`, `/console/…`, `crate::console`) are merged beside this
//! router in `run`: pages, not API operations; the console itself calls only routes of this list.

use std::sync::{Arc, OnceLock};

use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Router;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use super::{admin, endpoint, fhir, logs, oauth, queues, retry};
use crate::error::{Api, ApiError};
use crate::AppState;

/// Every public route, behind the per-client rate limit when it is on. The probes are merged
/// in by the caller, outside the limit.
pub fn router(state: Arc<AppState>) -> Router {
    let routes = public_routes(state.clone());
    let routes = match &state.rate_limiter {
        Some(limiter) => routes.layer(axum::middleware::from_fn_with_state(
            limiter.clone(),
            crate::rate_limit::enforce,
        )),
        None => routes,
    };
    // Outermost: shedding costs nothing, so it comes before the rate limit's Redis call.
    let routes = routes.layer(axum::middleware::from_fn_with_state(
        state,
        crate::overload::in_flight::admit,
    ));
    // Around everything: a shed or rate-limited request has its span too.
    routes.layer(axum::middleware::from_fn(crate::http_trace::server_span))
}

fn public_routes(state: Arc<AppState>) -> Router {
    let (routes, _document) = public_api().split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // A layer over the routes runs after routing: the matched route template is known.
        .layer(axum::middleware::from_fn(crate::http_metrics::record))
        .layer(axum::middleware::from_fn(crate::http_trace::record_route))
        .with_state(state)
}

/// The public routes with their documentation, one `routes!` per path (a `routes!` naming
/// handlers of different paths would serve each of its paths with all their methods).
fn public_api() -> OpenApiRouter<Arc<AppState>> {
    Documented::new()
        .routes(routes!(openapi_json))
        .routes(routes!(oauth::token))
        .routes(routes!(endpoint::post))
        .routes(routes!(fhir::post))
        .routes(routes!(logs::search))
        .routes(routes!(retry::retry_matching))
        .routes(routes!(logs::get_one))
        .routes(routes!(retry::retry))
        .routes(routes!(admin::create_organization))
        .routes(routes!(admin::get_organization, admin::update_organization))
        .routes(routes!(admin::create_source))
        .routes(routes!(admin::get_source, admin::update_source))
        .routes(routes!(admin::rotate_secret))
        .routes(routes!(admin::create_destination))
        .routes(routes!(admin::get_destination, admin::update_destination))
        .routes(routes!(queues::get))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(queues::skip))
        .routes(routes!(admin::create_subscription))
        .into_router()
}

/// An `OpenApiRouter` that takes documented routes only (it has no `route()`), on top of the
/// document's shared parts (`openapi::ApiDoc`).
struct Documented(OpenApiRouter<Arc<AppState>>);

impl Documented {
    fn new() -> Self {
        Self(OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi()))
    }

    fn routes(self, routes: UtoipaMethodRouter<Arc<AppState>>) -> Self {
        Self(self.0.routes(routes))
    }

    fn into_router(self) -> OpenApiRouter<Arc<AppState>> {
        self.0
    }
}

/// The OpenAPI document of [`public_api`], as pretty JSON (built once).
pub(crate) fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        public_api()
            .into_openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "OAuth",
    responses(
        (status = 200, description = "This document", body = serde_json::Value, content_type = "application/json"),
        crate::openapi::EveryRouteErrors,
    )
)]
async fn openapi_json() -> Response {
    ([(CONTENT_TYPE, "application/json")], document()).into_response()
}

async fn not_found(request: Request) -> ApiError {
    let path = request.uri().path();
    ApiError::not_found(format!("Unknown route {} {path}", request.method())).for_api(Api::of_path(path))
}

async fn method_not_allowed(request: Request) -> ApiError {
    let path = request.uri().path();
    ApiError::new(
        carrier_proto::ErrorKind::MethodNotAllowed,
        format!("Method {} is not allowed on {path}", request.method()),
    )
    .for_api(Api::of_path(path))
}

/// Checks in unit tests that a value a handler serializes matches the schema the document gives
/// it: the types, the required and the allowed fields, through `$ref`, `allOf` and the
/// `oneOf [null, ...]` of optional references (what utoipa generates for ingress's types).
/// The handler modules' tests use it, the one place they reach back to this module: the
/// document is built from all of them.
#[cfg(test)]
pub(crate) fn assert_matches_schema(schema_name: &str, value: &impl serde::Serialize) {
    use serde_json::Value;
    fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(target) => {
                let name = target.trim_start_matches("#/components/schemas/");
                resolve(document, &document["components"]["schemas"][name])
            }
            None => schema,
        }
    }
    fn type_of(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(number) if number.is_f64() => "number",
            Value::Number(_) => "integer",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
    /// Checks `value` against `schema`, adding the object fields it documents to `known` (an
    /// `allOf`'s parts each document some).
    fn check(document: &Value, schema: &Value, value: &Value, at: &str, known: &mut Vec<String>) {
        let schema = resolve(document, schema);
        if let Some(parts) = schema["allOf"].as_array() {
            let mut fields = Vec::new();
            for part in parts {
                check(document, part, value, at, &mut fields);
            }
            known.extend(fields);
            return;
        }
        if let Some(choices) = schema["oneOf"].as_array() {
            let matching = choices.iter().filter(|choice| {
                let choice = resolve(document, choice);
                choice["type"] == "null" && value.is_null() || choice["type"] != "null" && !value.is_null()
            });
            for choice in matching {
                check(document, choice, value, at, known);
            }
            return;
        }
        let allowed: Vec<&str> = match &schema["type"] {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => return, // any JSON
        };
        let actual = type_of(value);
        assert!(
            allowed.contains(&actual) || actual == "integer" && allowed.contains(&"number"),
            "{at}: a {actual} where the schema allows {allowed:?}: {value}"
        );
        match value {
            Value::Object(object) => {
                if schema["properties"].is_null() && schema["additionalProperties"] != Value::Bool(false) {
                    known.extend(object.keys().cloned()); // a free-form object (a JWK)
                    return;
                }
                let properties = schema["properties"].as_object().cloned().unwrap_or_default();
                for required in schema["required"].as_array().into_iter().flatten() {
                    let required = required.as_str().unwrap_or_default();
                    assert!(
                        object.contains_key(required),
                        "{at}: {required} is required: {value}"
                    );
                }
                for (name, field) in object {
                    if let Some(field_schema) = properties.get(name) {
                        check_closed(document, field_schema, field, &format!("{at}.{name}"));
                        known.push(name.clone());
                    }
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    check_closed(document, &schema["items"], item, &format!("{at}[{index}]"));
                }
            }
            _ => {}
        }
    }
    /// [`check`], and every field of an object is one the schema (all its parts) documents.
    fn check_closed(document: &Value, schema: &Value, value: &Value, at: &str) {
        let mut known = Vec::new();
        check(document, schema, value, at, &mut known);
        for name in value
            .as_object()
            .map(|object| object.keys())
            .into_iter()
            .flatten()
        {
            assert!(
                known.contains(name),
                "{at}.{name} is sent but not documented: {value}"
            );
        }
    }
    let document: Value = serde_json::from_str(document()).expect("the document is JSON");
    let value = serde_json::to_value(value).expect("the value serializes");
    let schema = &document["components"]["schemas"][schema_name];
    assert!(schema.is_object(), "no schema {schema_name}");
    check_closed(&document, schema, &value, schema_name);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed() -> serde_json::Value {
        serde_json::from_str(document()).expect("the document is JSON")
    }

    /// `docs/openapi.json` is what the code generates: the committed document cannot drift.
    #[test]
    fn the_committed_openapi_document_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = format!("{}\n", document());
        if std::env::var_os("CARRIER_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json differs from the code; regenerate it with \
             CARRIER_UPDATE_OPENAPI=1 cargo test -p carrier-ingress openapi"
        );
    }

    /// The public routes, as the document lists them: a route whose documentation is dropped
    /// (or one added without updating this list) fails here. The router serves exactly the
    /// documented ones (`public_api` registers both from one list).
    #[test]
    fn the_openapi_document_lists_every_public_route() {
        let document = parsed();
        let mut documented = Vec::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        documented.sort();
        let mut expected = vec![
            "GET /openapi.json",
            "POST /oauth/token",
            "POST /endpoint",
            "POST /fhir/R4/{resource_type}",
            "GET /v1/logs",
            "POST /v1/logs/retry",
            "GET /v1/logs/{id}",
            "POST /v1/logs/{id}/retry",
            "POST /v1/organizations",
            "GET /v1/organizations/{id}",
            "PATCH /v1/organizations/{id}",
            "POST /v1/sources",
            "GET /v1/sources/{id}",
            "PATCH /v1/sources/{id}",
            "POST /v1/sources/{id}/rotate-secret",
            "POST /v1/destinations",
            "GET /v1/destinations/{id}",
            "PATCH /v1/destinations/{id}",
            "GET /v1/destinations/{id}/queue",
            "POST /v1/destinations/{id}/pause",
            "POST /v1/destinations/{id}/resume",
            "POST /v1/destinations/{id}/skip",
            "POST /v1/subscriptions",
        ];
        expected.sort();
        assert_eq!(documented, expected);
    }

    #[test]
    fn the_fhir_success_answer_documents_its_headers_and_content_type() {
        let document = parsed();
        let fhir_success = &document["paths"]["/fhir/R4/{resource_type}"]["post"]["responses"]["200"];
        assert!(
            fhir_success["headers"]["Carrier-Log-Ids"].is_object(),
            "{fhir_success}"
        );
        assert!(
            fhir_success["content"]["application/fhir+json"].is_object(),
            "{fhir_success}"
        );
    }

    /// Every success answer names a schema (a `$ref` to a type a handler serializes), not a
    /// free-form `{}`; only `/openapi.json`, the document itself, is any JSON.
    #[test]
    fn every_success_answer_has_a_typed_schema() {
        let document = parsed();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                for (status, response) in operation["responses"].as_object().expect("responses") {
                    if !status.starts_with('2') || path == "/openapi.json" {
                        continue;
                    }
                    let content = response["content"].as_object().expect("a body");
                    for (content_type, media) in content {
                        assert!(
                            media["schema"]["$ref"].is_string(),
                            "{method} {path} {status} {content_type}: {}",
                            media["schema"]
                        );
                    }
                }
            }
        }
    }

    /// The schema check fails on what a handler must not send: a field of the wrong type, one
    /// the schema does not document, a required one missing.
    #[test]
    #[should_panic(expected = "ErrorText.Text: a integer where the schema allows")]
    fn the_schema_check_refuses_a_field_of_the_wrong_type() {
        assert_matches_schema("ErrorText", &serde_json::json!({ "Text": 7 }));
    }

    #[test]
    #[should_panic(expected = "ErrorText.Code is sent but not documented")]
    fn the_schema_check_refuses_an_undocumented_field() {
        assert_matches_schema("ErrorText", &serde_json::json!({ "Text": "x", "Code": "y" }));
    }

    #[test]
    #[should_panic(expected = "DataModelError: Meta is required")]
    fn the_schema_check_refuses_a_missing_required_field() {
        assert_matches_schema("DataModelError", &serde_json::json!({}));
    }

    /// Every schema a `$ref` names is in the document's components.
    #[test]
    fn every_schema_reference_resolves() {
        fn references(value: &serde_json::Value, found: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(object) => {
                    if let Some(serde_json::Value::String(target)) = object.get("$ref") {
                        found.push(target.clone());
                    }
                    object.values().for_each(|value| references(value, found));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|value| references(value, found)),
                _ => {}
            }
        }
        let document = parsed();
        let mut found = Vec::new();
        references(&document, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{target}"));
            assert!(
                document["components"]["schemas"][name].is_object(),
                "{target} is not in the document"
            );
        }
    }
}
