//! The web app (`web/`, a Next.js static export) served from its build directory: files as
//! they are (`/login/` → `login/index.html`), the channel and category pages for any name
//! (`/watch/<name>/` → `watch/index.html`, which reads the name from the URL), and the app's
//! 404 page otherwise. Hashed assets under `/_next/static/` are cached for a year; pages are
//! revalidated on every load.

use std::convert::Infallible;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeDir;

/// Pages that take a name from the URL: `/<prefix>/<name>/` is served `<prefix>/index.html`.
const NAMED_PAGES: [&str; 2] = ["watch", "category"];

/// The service behind every path no other route takes.
pub fn service(
    dir: PathBuf,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + Sync
       + 'static {
    let files = ServeDir::new(&dir).append_index_html_on_directories(true);
    tower::service_fn(move |req: Request| {
        let files = files.clone();
        let dir = dir.clone();
        async move {
            if !matches!(*req.method(), Method::GET | Method::HEAD) {
                return Ok(StatusCode::METHOD_NOT_ALLOWED.into_response());
            }
            let path = req.uri().path().to_owned();
            let resp = match files.oneshot(req).await {
                Ok(r) if r.status() != StatusCode::NOT_FOUND => r.map(Body::new),
                _ => fallback(&dir, &path).await,
            };
            Ok(with_cache_control(&path, resp))
        }
    })
}

/// A named page for `/watch/<name>/`, `/category/<slug>/`; the app's 404 page otherwise.
async fn fallback(dir: &std::path::Path, path: &str) -> Response {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let (first, name, rest) = (segments.next(), segments.next(), segments.next());
    if let (Some(page), Some(name), None) = (first, name, rest) {
        if NAMED_PAGES.contains(&page) && !name.starts_with('.') {
            if !path.ends_with('/') {
                // The app's links and relative URLs assume the trailing slash.
                return (
                    StatusCode::PERMANENT_REDIRECT,
                    [(header::LOCATION, format!("{path}/"))],
                )
                    .into_response();
            }
            if let Ok(html) = tokio::fs::read(dir.join(page).join("index.html")).await {
                return html_response(StatusCode::OK, html);
            }
        }
    }
    match tokio::fs::read(dir.join("404.html")).await {
        Ok(html) => html_response(StatusCode::NOT_FOUND, html),
        Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

fn html_response(status: StatusCode, html: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

fn with_cache_control(path: &str, mut resp: Response) -> Response {
    let value = if path.starts_with("/_next/static/") && resp.status().is_success() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    resp
}
