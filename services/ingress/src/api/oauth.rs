//! `POST /oauth/token`: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4).
//! Parameters come as a form (`application/x-www-form-urlencoded`) or as JSON.
//!
//! The client authenticates with `client_id` and `client_secret`, or with a `private_key_jwt`
//! client assertion (RFC 7523 §2.2): `client_assertion_type` =
//! `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and `client_assertion` = a JWT signed
//! with the key whose public JWK is registered on the source, its `aud` = `token_url`. The
//! router checks either (it owns the sources).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use carrier_proto::config_v1::AuthenticateRequest;
use carrier_proto::ErrorKind;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::auth;
use crate::error::ApiError;
use crate::AppState;

/// `client_assertion_type` of a JWT client assertion.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An OAuth error answer: `error` and `error_description` as RFC 6749 §5.2 names them, plus the
/// Data Model API's `Meta.Errors` so every Carrier error reads the same.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": description,
        "Meta": { "Errors": [ { "Text": description } ] },
    });
    (status, Json(body)).into_response()
}

/// The grant's parameters, or the answer that refuses them.
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself, built once per request
pub(crate) fn parameters(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, Response> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let bad = |text: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", text);
    if is_json {
        let value: Value = serde_json::from_slice(body).map_err(|_| bad("Request body is not valid JSON"))?;
        let object = value
            .as_object()
            .ok_or_else(|| bad("Request body must be a JSON object"))?;
        Ok(object
            .iter()
            .filter_map(|(key, value)| value.as_str().map(|v| (key.clone(), v.to_string())))
            .collect())
    } else {
        let text = std::str::from_utf8(body).map_err(|_| bad("Request body is not UTF-8"))?;
        Ok(form_urlencoded(text))
    }
}

/// Decodes `a=b&c=d` with `+` and `%XX` escapes.
fn form_urlencoded(text: &str) -> HashMap<String, String> {
    fn decode(part: &str) -> String {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut index = 0;
        while index < bytes.len() {
            match bytes[index] {
                b'+' => out.push(b' '),
                b'%' if index + 2 < bytes.len() => {
                    let hex = |byte: u8| (byte as char).to_digit(16).map(|digit| digit as u8);
                    match (hex(bytes[index + 1]), hex(bytes[index + 2])) {
                        (Some(high), Some(low)) => {
                            out.push(high * 16 + low);
                            index += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                byte => out.push(byte),
            }
            index += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// An access token (RFC 6749 §5.1).
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    /// `Bearer`.
    token_type: String,
    /// Seconds.
    expires_in: u64,
}

#[utoipa::path(
    post,
    path = "/oauth/token",
    operation_id = "oauth_token",
    tag = "OAuth",
    request_body(content = crate::openapi::TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A short-lived access token", body = TokenResponse),
        (status = 400, description = "Missing or unsupported parameters (RFC 6749 error plus Meta.Errors)"),
        (status = 401, description = "Unknown client, wrong secret or disabled source"),
        crate::openapi::BodyErrors,
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn token(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let body = match super::body::read_body(body, 64 * 1024).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let parameters = match parameters(&headers, &body) {
        Ok(parameters) => parameters,
        Err(response) => return response,
    };
    match parameters.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant_type '{other}' is not supported (use client_credentials)"),
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Required field missing - grant_type",
            )
        }
    }
    let assertion = match parameters.get("client_assertion_type").map(String::as_str) {
        None => None,
        Some(JWT_BEARER) => match parameters.get("client_assertion") {
            Some(assertion) if !assertion.is_empty() => Some(assertion.clone()),
            _ => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Required field missing - client_assertion",
                )
            }
        },
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("client_assertion_type '{other}' is not supported (use {JWT_BEARER})"),
            )
        }
    };
    let request = match assertion {
        Some(assertion) => {
            if parameters.contains_key("client_secret") {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Use one client authentication method: client_secret or client_assertion, not both",
                );
            }
            let Some(token_url) = state.config.token_url.clone() else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_assertion is not enabled on this server (token_url is not configured)",
                );
            };
            AuthenticateRequest {
                client_id: parameters.get("client_id").cloned().unwrap_or_default(),
                client_secret: String::new(),
                client_assertion: assertion,
                audience: token_url,
            }
        }
        None => {
            let (Some(client_id), Some(client_secret)) =
                (parameters.get("client_id"), parameters.get("client_secret"))
            else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Required field missing - client_id and client_secret (or client_assertion_type and client_assertion)",
                );
            };
            AuthenticateRequest {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                ..Default::default()
            }
        }
    };
    let with_assertion = !request.client_assertion.is_empty();
    match state.router.clone().authenticate(request).await {
        Ok(source) => {
            let source = source.into_inner();
            let access_token = state.tokens.issue(
                &auth::SourceToken {
                    source_id: source.id,
                    organization_id: source.organization_id,
                    environment: source.environment,
                },
                auth::now_unix(),
            );
            // RFC 6749 §5.1: a token answer must not be cached by anything on the way.
            (
                [
                    (axum::http::header::CACHE_CONTROL, "no-store"),
                    (axum::http::header::PRAGMA, "no-cache"),
                ],
                Json(TokenResponse {
                    access_token,
                    token_type: "Bearer".into(),
                    expires_in: state.tokens.ttl_secs(),
                }),
            )
                .into_response()
        }
        Err(status) => {
            let error = ApiError::from(status);
            match error.kind {
                // An assertion's refusal says what is wrong with it (nothing secret is guessed
                // that way); a secret's refusal never does.
                ErrorKind::Unauthorized if with_assertion => {
                    oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &error.text)
                }
                ErrorKind::Unauthorized => oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "Invalid client credentials",
                ),
                // The right secret of a disabled source.
                ErrorKind::Forbidden => {
                    oauth_error(StatusCode::FORBIDDEN, "unauthorized_client", &error.text)
                }
                _ => error.into_response(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::form_urlencoded;

    #[test]
    fn form_bodies_decode_escapes() {
        let parsed = form_urlencoded("grant_type=client_credentials&client_id=a%2Bb&client_secret=x+y%");
        assert_eq!(parsed["grant_type"], "client_credentials");
        assert_eq!(parsed["client_id"], "a+b");
        assert_eq!(parsed["client_secret"], "x y%");
    }
}
