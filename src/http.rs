//! The HTTP surface of the binary: WHIP/WHEP (from `signaling`), the platform API (`/api`, from
//! `api`), `/metrics`, `/api/live`, `/api/ingest`, `/hls/` (the local HLS store), and the web
//! app (`crate::web`) or, without its build, the built-in pages; CORS, body limits and request
//! tracing around them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use media::MediaHandle;
use signaling::{SignalingState, StreamAuthorizer};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::audience::HlsAudience;
use crate::config::Config;

const WATCH_PAGE: &str = include_str!("pages/watch.html");
const PUBLISH_PAGE: &str = include_str!("pages/publish.html");
const INDEX_PAGE: &str = include_str!("pages/index.html");

pub fn router(
    config: &Config,
    media: MediaHandle,
    authorizer: Arc<dyn StreamAuthorizer>,
    api: &api::Api,
    audience: Arc<HlsAudience>,
    rtmp_port: u16,
) -> Router {
    let signaling = signaling::router(SignalingState {
        media: media.clone(),
        authorizer,
        ice_servers: config.ice_servers.clone(),
        session_rate: Arc::new(signaling::limit::SessionRate::new(
            config.session_burst,
            config.sessions_per_sec,
        )),
        shared_session_rate: (api.cluster().is_clustered() && config.session_burst > 0).then(
            || {
                Arc::new(crate::platform::ClusterSessionRate {
                    cluster: api.cluster().clone(),
                    rate: api::ratelimit::Rate::new(
                        config.session_burst,
                        std::time::Duration::from_secs_f64(
                            f64::from(config.session_burst) / config.sessions_per_sec.max(0.001),
                        ),
                    ),
                }) as Arc<dyn signaling::limit::SharedSessionRate>
            },
        ),
    });
    let hls_live = media.hls_live().cloned();
    let mut pages = Router::new()
        .route("/publish/{stream}", get(page_for(PUBLISH_PAGE)))
        .route(
            "/api/ingest",
            get(move || async move { Json(serde_json::json!({ "rtmp_port": rtmp_port })) }),
        )
        .route(
            "/metrics",
            get({
                let api = api.clone();
                move |State(media): State<MediaHandle>| metrics(media, api)
            }),
        )
        .route(
            "/healthz",
            get({
                let api = api.clone();
                move || healthz(api)
            }),
        )
        .route(
            "/api/live",
            get({
                // Where players fetch HLS: this server's /hls, or a CDN in front of the store.
                let hls = config.hls_base().map(Arc::<str>::from);
                let audience = audience.clone();
                let api = api.clone();
                let cache = Arc::new(LiveCache::default());
                move |State(media): State<MediaHandle>| {
                    live(media, hls, audience, api.clone(), cache.clone())
                }
            }),
        )
        .with_state(media);
    if config.web_dir.is_none() {
        pages = pages
            .route("/", get(|| async { Html(INDEX_PAGE) }))
            .route("/watch/{stream}", get(page_for(WATCH_PAGE)));
    }
    // Cross-origin on purpose: WHIP/WHEP (other sites' players and publishers, RFC 9725 §4.4)
    // and HLS (players and CDNs anywhere). The API and the pages are same-origin only.
    let mut cross_origin = signaling;
    if let Some(hls) = &config.media.hls {
        cross_origin = cross_origin.merge(
            Router::new()
                .route("/hls/{*path}", get(hls_object))
                .with_state(Arc::new(HlsRoutes {
                    dir: hls.dir.clone(),
                    audience,
                    live: hls_live.clone(),
                })),
        );
    }
    let cross_origin = cross_origin
        .layer(cors(config))
        .layer(axum::middleware::from_fn(accept_post));
    let mut app = cross_origin.merge(pages).merge(api.router());
    if let Some(dir) = &config.web_dir {
        app = app.fallback_service(crate::web::service(dir.clone()));
    }
    let headers = Arc::new(SecurityHeaders::new(config));
    app.layer(axum::middleware::from_fn(move |req, next| {
        security_headers(headers.clone(), req, next)
    }))
    .layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        config.http_limits.request_timeout,
    ))
    // Spans name the path, never the query: the chat and notification-stream URLs carry an
    // access token (`?access_token=`, the one way a browser's WebSocket or EventSource can).
    .layer(TraceLayer::new_for_http().make_span_with(
        |req: &axum::http::Request<axum::body::Body>| {
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
        },
    ))
}

/// RFC 9725 §4.4 / WHEP: `OPTIONS` on an endpoint says what `POST` takes. The CORS layer
/// answers preflights itself, so this is added around it.
async fn accept_post(req: Request, next: Next) -> Response {
    let endpoint = req.method() == Method::OPTIONS && req.uri().path().matches('/').count() == 2;
    let mut resp = next.run(req).await;
    if endpoint {
        resp.headers_mut()
            .insert("accept-post", HeaderValue::from_static("application/sdp"));
    }
    resp
}

/// Headers every response carries (browsers' defences for the web app and the API).
struct SecurityHeaders {
    csp: HeaderValue,
}

impl SecurityHeaders {
    fn new(config: &Config) -> Self {
        // The HLS base may be a CDN on another origin: players fetch and show media from it.
        let hls_origin = config
            .hls_public_url
            .as_deref()
            .and_then(origin_of)
            .map(|o| format!(" {o}"))
            .unwrap_or_default();
        // Next.js's static export and the built-in pages use inline scripts and styles; media
        // and hls.js's workers come from blob: URLs.
        let csp = format!(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data: blob:{hls_origin}; media-src 'self' blob:{hls_origin}; \
             connect-src 'self'{hls_origin}; worker-src 'self' blob:; object-src 'none'; \
             base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
        );
        Self {
            csp: HeaderValue::from_str(&csp)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'")),
        }
    }
}

/// `https://cdn.example.com` of `https://cdn.example.com/live/hls`; `None` for a path.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

async fn security_headers(headers: Arc<SecurityHeaders>, req: Request, next: Next) -> Response {
    let https = req
        .extensions()
        .get::<crate::serve::ForwardedHttps>()
        .is_some();
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        h.insert(header::CONTENT_SECURITY_POLICY, headers.csp.clone());
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    if https {
        // Only when a trusted proxy says the client used TLS (glint itself speaks plain HTTP).
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
}

fn page_for(page: &'static str) -> impl Fn(Path<String>) -> std::future::Ready<Response> + Clone {
    move |Path(stream): Path<String>| {
        let resp = if signaling::valid_stream_name(&stream) {
            Html(page).into_response()
        } else {
            (StatusCode::NOT_FOUND, "no such stream").into_response()
        };
        std::future::ready(resp)
    }
}

/// WHIP/WHEP are called from other origins' pages (RFC 9725 §4.4): expose Location and ETag,
/// allow Authorization and If-Match; the preflight needs no token.
fn cors(config: &Config) -> CorsLayer {
    let origins = if config.cors_origins.is_empty() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LINK,
            "accept-patch".parse().unwrap(),
        ])
}

/// What `/hls/` serves from: the live renditions in memory (LL-HLS), then the local store.
struct HlsRoutes {
    dir: std::path::PathBuf,
    audience: Arc<HlsAudience>,
    live: Option<media::hls::LiveHls>,
}

/// HLS objects: live playlists (Low-Latency, with blocking reloads), parts and recent segments
/// from memory; the rest from the local store; with the Content-Type and Cache-Control a CDN
/// needs.
async fn hls_object(
    State(hls): State<Arc<HlsRoutes>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    Path(path): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    use media::hls::store::Kind;
    use media::hls::PlaylistError;
    let safe = path
        .split('/')
        .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains('\\'));
    let Some(kind) = Kind::of_path(&path).filter(|_| safe) else {
        return (StatusCode::NOT_FOUND, "no such HLS object").into_response();
    };
    let parts: Vec<&str> = path.split('/').collect();
    // A media playlist (`<stream>/<rendition>/index.m3u8`): a player watching.
    if let (Kind::Playlist, [stream, _, _]) = (kind, parts.as_slice()) {
        let ua = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        hls.audience
            .seen(stream, peer.ip(), ua, std::time::Instant::now());
    }
    let object = |body: Bytes, cache: &'static str| {
        (
            [
                (header::CONTENT_TYPE, kind.content_type()),
                (header::CACHE_CONTROL, cache),
            ],
            body,
        )
            .into_response()
    };
    if let Some(live) = &hls.live {
        match (kind, parts.as_slice()) {
            (Kind::Playlist, [stream, "master.m3u8"]) => {
                if let Some(m) = live.master(stream) {
                    return object(m, kind.cache_control());
                }
            }
            (Kind::Playlist, [stream, rendition, "index.m3u8"]) => {
                match live
                    .media_playlist(stream, rendition, query.as_deref())
                    .await
                {
                    // A blocking reload's answer names one part of the stream: a CDN may keep
                    // it; the plain URL changes with every part.
                    Ok(text) => {
                        let cache = if query.as_deref().is_some_and(|q| q.contains("_HLS_msn")) {
                            "public, max-age=6"
                        } else {
                            "no-cache"
                        };
                        return object(text.into(), cache);
                    }
                    Err(PlaylistError::NotLive) => {}
                    Err(e @ PlaylistError::Timeout) => {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [(header::RETRY_AFTER, "1")],
                            e.to_string(),
                        )
                            .into_response()
                    }
                    Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                }
            }
            (Kind::Segment, [stream, rendition, name]) => {
                if let Some(chunks) = live.object(stream, rendition, name).await {
                    let body = if chunks.len() == 1 {
                        chunks.into_iter().next().unwrap_or_default()
                    } else {
                        Bytes::from(chunks.concat())
                    };
                    return object(body, kind.cache_control());
                }
            }
            _ => {}
        }
    }
    match tokio::fs::read(hls.dir.join(&path)).await {
        Ok(body) => object(body.into(), kind.cache_control()),
        Err(_) => (StatusCode::NOT_FOUND, "no such HLS object").into_response(),
    }
}

/// `ok`, or `degraded: ...` (still 200: media plays on; a load balancer should keep sending
/// viewers) when the cluster's Redis or the database server is unreachable.
async fn healthz(api: api::Api) -> Response {
    let mut problems = Vec::new();
    if api.cluster().health() == api::cluster::Health::Degraded {
        problems.push("cluster redis unreachable (chat and limits are this node's only)");
    }
    if !api.state().db_health.is_up() {
        problems.push("database unreachable (the API answers 503)");
    }
    if problems.is_empty() {
        "ok".into_response()
    } else {
        format!("degraded: {}", problems.join("; ")).into_response()
    }
}

async fn metrics(media: MediaHandle, api: api::Api) -> Response {
    let mut out = String::with_capacity(2048);
    media.metrics().render_prometheus(&mut out);
    let cluster = api.cluster();
    let stats = cluster.stats();
    let up = |h: api::cluster::Health| u8::from(h == cluster.health());
    use std::fmt::Write;
    let _ = write!(
        out,
        "# HELP glint_cluster_health This node's standing with its cluster (one of alone, connected, degraded is 1)\n\
         # TYPE glint_cluster_health gauge\n\
         glint_cluster_health{{state=\"alone\"}} {}\n\
         glint_cluster_health{{state=\"connected\"}} {}\n\
         glint_cluster_health{{state=\"degraded\"}} {}\n\
         # HELP glint_cluster_events_published_total Events this node sent on the cluster bus\n\
         # TYPE glint_cluster_events_published_total counter\n\
         glint_cluster_events_published_total {}\n\
         # HELP glint_cluster_events_received_total Events this node received from the cluster bus (its own included)\n\
         # TYPE glint_cluster_events_received_total counter\n\
         glint_cluster_events_received_total {}\n\
         # HELP glint_cluster_bus_reconnects_total Times the bus subscription was lost and made again\n\
         # TYPE glint_cluster_bus_reconnects_total counter\n\
         glint_cluster_bus_reconnects_total {}\n\
         # HELP glint_database_up Whether the database answers (0 while a database server is unreachable)\n\
         # TYPE glint_database_up gauge\n\
         glint_database_up {}\n",
        up(api::cluster::Health::Alone),
        up(api::cluster::Health::Connected),
        up(api::cluster::Health::Degraded),
        stats.published,
        stats.received,
        stats.reconnects,
        u8::from(api.state().db_health.is_up()),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[derive(serde::Serialize)]
struct LiveStream {
    name: String,
    live: bool,
    /// The publisher dropped and may come back within the reconnect grace.
    reconnecting: bool,
    /// WebRTC and HLS viewers.
    viewers: usize,
    webrtc_viewers: usize,
    hls_viewers: usize,
    codecs: Vec<String>,
    /// The HLS master playlist and the latest thumbnail (when HLS is on).
    #[serde(skip_serializing_if = "Option::is_none")]
    hls_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thumbnail_url: Option<String>,
    /// In a cluster: the node that ingests it (its id in the registry).
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
}

/// In a cluster, `/api/live` costs Redis a few ms of CPU at 1,000 streams (docs/benchmarks.md):
/// the answer is kept this long (counts change every 5 s anyway).
const CLUSTER_LIVE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Default)]
struct LiveCache {
    last: std::sync::Mutex<Option<(std::time::Instant, Bytes)>>,
}

async fn live(
    media: MediaHandle,
    hls: Option<Arc<str>>,
    audience: Arc<HlsAudience>,
    api: api::Api,
    cache: Arc<LiveCache>,
) -> Response {
    let now = std::time::Instant::now();
    let clustered = api.cluster().is_clustered();
    if clustered {
        let fresh = cache
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|(at, _)| now.duration_since(*at) < CLUSTER_LIVE_TTL);
        if let Some((_, body)) = fresh {
            return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
    }
    let Ok(streams) = media.streams().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let entry = |name: String, live: bool, webrtc: usize, hls_viewers: usize| LiveStream {
        live,
        reconnecting: false,
        viewers: webrtc + hls_viewers,
        webrtc_viewers: webrtc,
        hls_viewers,
        hls_url: hls.as_ref().map(|b| format!("{b}/{name}/master.m3u8")),
        thumbnail_url: hls.as_ref().map(|b| format!("{b}/{name}/thumb.jpg")),
        name,
        codecs: Vec::new(),
        node: None,
    };
    let mut out: Vec<LiveStream> = streams
        .into_iter()
        .map(|s| {
            let hls_viewers = audience.count(&s.name, now);
            LiveStream {
                reconnecting: s.reconnecting,
                codecs: s.codecs,
                ..entry(s.name, s.live, s.viewers, hls_viewers)
            }
        })
        .collect();
    if !clustered {
        return Json(out).into_response();
    }
    add_cluster_streams(&api, &mut out, entry).await;
    let body = Bytes::from(serde_json::to_vec(&out).unwrap_or_default());
    *cache.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, body.clone()));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// In a cluster: every node's live streams, with every node's viewers summed (this node's
/// own counts stand when Redis is away).
async fn add_cluster_streams(
    api: &api::Api,
    out: &mut Vec<LiveStream>,
    entry: impl Fn(String, bool, usize, usize) -> LiveStream,
) {
    let me = api.cluster().node_id().to_owned();
    for s in out.iter_mut() {
        s.node = Some(me.clone());
    }
    let remote: Vec<String> = match api.live_stream_names().await {
        Ok(names) => names
            .into_iter()
            .filter(|n| !out.iter().any(|s| &s.name == n))
            .collect(),
        Err(_) => Vec::new(),
    };
    if let Ok(owners) = api.cluster().stream_owners(&remote).await {
        for (name, owner) in remote.into_iter().zip(owners) {
            if let Some(node) = owner {
                out.push(LiveStream {
                    node: Some(node),
                    ..entry(name, true, 0, 0)
                });
            }
        }
    }
    let names: Vec<String> = out.iter().map(|s| s.name.clone()).collect();
    if let Ok(Some(totals)) = api.cluster().total_viewers(&names).await {
        for (s, v) in out.iter_mut().zip(totals) {
            if v.total() > 0 || s.node.as_deref() != Some(me.as_str()) {
                s.webrtc_viewers = v.webrtc;
                s.hls_viewers = v.hls;
                s.viewers = v.total();
            }
        }
    }
}
