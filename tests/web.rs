//! The web app's build served by the binary: files and directories as they are, the channel and
//! category pages for any name, the app's 404 page, cache headers, and `/api/ingest`. A small
//! stand-in build (a few files) keeps this test independent of `npm run build`; the real build
//! is exercised by `tests/browser/webapp.test.mjs`.

mod common;

use common::*;
use reqwest::redirect::Policy;

fn write(dir: &std::path::Path, path: &str, body: &str) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

#[tokio::test]
async fn the_web_build_is_served_with_named_pages_and_a_404_page() {
    let web = tempdir::Dir::new();
    for (path, body) in [
        ("index.html", "home page"),
        ("404.html", "app 404"),
        ("login/index.html", "login page"),
        ("watch/index.html", "watch page"),
        ("category/index.html", "category page"),
        ("_next/static/chunks/app.js", "js"),
    ] {
        write(&web.path, path, body);
    }
    let (server, _dir) = start_server_with(|c| c.web_dir = Some(web.path.clone())).await;
    let b = base(&server);
    let c = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| {
        let req = c.get(format!("{b}{path}"));
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let cache = r
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap().to_owned());
            let location = r
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, r.text().await.unwrap(), cache, location)
        }
    };

    let (s, body, cache, _) = get("/").await;
    assert_eq!((s, body.as_str()), (200, "home page"));
    assert_eq!(cache.as_deref(), Some("no-cache"));
    assert_eq!(get("/login/").await.1, "login page");
    let (s, _, _, location) = get("/login").await;
    assert!((300..400).contains(&s), "{s}");
    assert_eq!(location.as_deref(), Some("/login/"));
    for path in ["/watch/vic/", "/watch/some_one/"] {
        let (s, body, _, _) = get(path).await;
        assert_eq!((s, body.as_str()), (200, "watch page"), "{path}");
    }
    assert_eq!(get("/category/gaming/").await.1, "category page");
    let (s, _, _, location) = get("/watch/vic").await;
    assert_eq!((s, location.as_deref()), (308, Some("/watch/vic/")));
    let (s, _, cache, _) = get("/_next/static/chunks/app.js").await;
    assert_eq!(s, 200);
    assert_eq!(
        cache.as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    for path in [
        "/nope",
        "/watch/vic/extra/",
        "/_next/static/missing.js",
        "/../Cargo.toml",
    ] {
        let (s, body, _, _) = get(path).await;
        assert_eq!((s, body.as_str()), (404, "app 404"), "{path}");
    }
    // Other routes keep their owners.
    assert_eq!(get("/healthz").await.1, "ok");
    let (s, body, _, _) = get("/api/ingest").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rtmp_port"], server.rtmp_addr.port());
    assert_eq!(get("/api/nope").await.0, 404);
    let posted = c.post(format!("{b}/")).send().await.unwrap();
    assert_eq!(posted.status(), 405);
    server.shutdown().await;
}

#[test]
fn a_web_dir_without_index_html_is_refused_at_start() {
    let empty = tempdir::Dir::new();
    let cli = <glint::config::Cli as clap::Parser>::try_parse_from([
        "glint",
        "--web-dir",
        empty.path.to_str().unwrap(),
    ])
    .unwrap();
    let err = glint::Config::load(cli).unwrap_err().to_string();
    assert!(err.contains("no index.html"), "{err}");
}
