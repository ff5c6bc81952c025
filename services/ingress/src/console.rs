//! The console: a few static files (`services/ingress/console/`, embedded at build time) that
//! run in the browser and call the same public API as any other client. Nothing here reads a
//! token or touches a store: the pages hold the token in memory and send it with each API call.
//!
//! Served outside the rate limit and the admission gate (they are the API's protections; these
//! files cost a memory copy), with headers that keep the pages to their own files: a strict
//! Content-Security-Policy (no inline script or style, no other origin, no framing), no
//! referrer, no MIME sniffing.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The console's files: name, content type, contents.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/api.js"),
    ),
    (
        "logs.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/logs.js"),
    ),
    (
        "destinations.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/destinations.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/ui.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../console/style.css"),
    ),
];

/// Only this origin's scripts, styles and API; no plugin, frame, form target or base URL.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// `/console/` and its files; `/` and `/console` lead there.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(|| async { file("index.html") }))
        .route(
            "/console/{name}",
            get(|Path(name): Path<String>| async move { file(&name) }),
        )
}

fn file(name: &str) -> Response {
    let Some((_, content_type, contents)) = FILES.iter().find(|(file, _, _)| *file == name) else {
        return (StatusCode::NOT_FOUND, "Not found").into_response();
    };
    let mut response = (*contents).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Embedded in the binary: a new release serves new files, so a browser asks each time
    // (the files are small; a 200 costs less than a stale console).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file a page loads is served: the module imports and the links of index.html name
    /// only files of `FILES` (a missing one would leave a blank page).
    #[test]
    fn every_file_a_page_loads_is_served() {
        let served: Vec<&str> = FILES.iter().map(|(name, _, _)| *name).collect();
        for (name, _, contents) in FILES {
            for reference in contents
                .split(['"', '\''])
                .filter(|part| part.starts_with("./") || part.starts_with("/console/"))
            {
                let file = reference.trim_start_matches("./").trim_start_matches("/console/");
                if file.is_empty() {
                    continue;
                }
                assert!(
                    served.contains(&file),
                    "{name} loads {reference}, which is not served"
                );
            }
        }
    }

    #[test]
    fn files_carry_their_type_and_the_policy() {
        let response = file("app.js");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(file("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(file("nothing.js").status(), StatusCode::NOT_FOUND);
    }
}
