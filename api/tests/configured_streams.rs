//! Streams the operator configured by key: nobody registers their names, and a database stream
//! key never publishes to one (not even the key of a user who got the name before it was
//! reserved).

mod common;

use api::accounts::AccountConfig;
use axum::http::{Method, StatusCode};
use common::*;
use serde_json::json;

#[tokio::test]
async fn a_configured_name_cannot_be_registered_or_published_with_a_database_key() {
    let (mut api, r) = app().await;
    // Before the operator configured `demo`, someone registered it and made a channel.
    let (_, token, _) = register(&r, "demo").await;
    let (s, v) = call(
        &r,
        Method::POST,
        "/api/streams",
        Some(&token),
        Some(json!({"title": "squatted"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["stream_key"].as_str().unwrap().to_owned();
    assert_eq!(api.check_stream_key("demo", &key).await.unwrap(), Ok(()));
    assert_eq!(
        api.stream_for_key(&key).await.unwrap().as_deref(),
        Some("demo")
    );

    // Now `demo` is configured.
    api.set_account_config(&AccountConfig {
        configured_streams: vec!["demo".into()],
        ..AccountConfig::default()
    });
    assert_eq!(
        api.check_stream_key("demo", &key).await.unwrap(),
        Err(api::KeyCheck::WrongKey),
        "WHIP: the database key does not publish to a configured stream"
    );
    assert_eq!(
        api.stream_for_key(&key).await.unwrap(),
        None,
        "RTMP: nor does it name one"
    );

    // And the name cannot be registered again (nor in other case).
    let r = api.router();
    for name in ["demo", "DEMO"] {
        let (s, v) = call(
            &r,
            Method::POST,
            "/api/users/register",
            None,
            Some(
                json!({"username": name, "email": "x@example.com", "password": "a good password"}),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert_eq!(v["error"]["message"], "username is reserved");
    }
    // Other users' keys still work.
    let (_, t, _) = register(&r, "carla").await;
    let (_, v) = call(
        &r,
        Method::POST,
        "/api/streams",
        Some(&t),
        Some(json!({"title": "mine"})),
    )
    .await;
    let carla_key = v["stream_key"].as_str().unwrap().to_owned();
    assert_eq!(
        api.check_stream_key("carla", &carla_key).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        api.stream_for_key(&carla_key).await.unwrap().as_deref(),
        Some("carla")
    );
}
