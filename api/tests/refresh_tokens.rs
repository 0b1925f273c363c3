//! Refresh-token families: parallel uses of one token (exactly one wins), reuse of a used token
//! (the whole session is revoked), the sweep of expired sessions, the per-user session cap.

mod common;

use api::accounts::AccountConfig;
use axum::http::{Method, StatusCode};
use axum::Router;
use common::*;
use serde_json::{json, Value};

async fn refresh(r: &Router, token: &str) -> (StatusCode, Value) {
    call(
        r,
        Method::POST,
        "/api/users/refresh",
        None,
        Some(json!({"refresh_token": token})),
    )
    .await
}

fn next(v: &Value) -> String {
    v["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned()
}

async fn sessions_of(api: &api::Api, user: &str) -> usize {
    let mut res = api
        .state()
        .db
        .query("SELECT VALUE record::id(id) FROM refresh_token WHERE user = $u")
        .bind(("u", user.to_owned()))
        .await
        .unwrap();
    let ids: Vec<String> = res.take(0).unwrap();
    ids.len()
}

/// 8 parallel refreshes with one token, 5 times: one winner each time, whose new token is then
/// revoked too (the others presented a used token).
async fn race(r: &Router) {
    for round in 0..5 {
        let (_, _, token) = register(r, &format!("racer{round}")).await;
        let uses: Vec<_> = (0..8)
            .map(|_| {
                let (r, token) = (r.clone(), token.clone());
                tokio::spawn(async move { refresh(&r, &token).await })
            })
            .collect();
        let mut won = Vec::new();
        for u in uses {
            let (s, v) = u.await.unwrap();
            match s {
                StatusCode::OK => won.push(next(&v)),
                StatusCode::UNAUTHORIZED => {}
                other => panic!("round {round}: {other}: {v}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: {} winners", won.len());
        let (s, _) = refresh(r, &won[0]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_uses_of_one_token_have_exactly_one_winner() {
    let (_api, r) = app().await;
    race(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_uses_have_one_winner_on_surrealkv_too() {
    let dir = std::env::temp_dir().join(format!("glint-refresh-race-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let api = api::Api::connect(&format!("surrealkv://{}", dir.display()), SECRET)
        .await
        .unwrap();
    race(&api.router()).await;
    drop(api);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn reuse_of_a_used_token_revokes_the_session() {
    let (api, r) = app().await;
    let (id, _, t1) = register(&r, "alice").await;
    let (s, v) = refresh(&r, &t1).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let t2 = next(&v);
    let (s, v) = refresh(&r, &t2).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let t3 = next(&v);
    // An older token comes back (a thief's copy, or the victim after the thief refreshed).
    let (s, v) = refresh(&r, &t1).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        v["error"]["message"],
        "refresh token was already used; the session is revoked, log in again"
    );
    let (s, v) = refresh(&r, &t3).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the newest token is dead too");
    assert_eq!(v["error"]["message"], "unknown or revoked refresh token");
    assert_eq!(sessions_of(&api, &id).await, 0);

    // Another session of the same user is not touched; logout with any of its tokens ends it.
    let (s, v) = call(
        &r,
        Method::POST,
        "/api/users/login",
        None,
        Some(json!({"username": "alice", "password": "a good password"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let l1 = next(&v);
    let (_, v) = refresh(&r, &l1).await;
    let l2 = next(&v);
    let (s, _) = call(
        &r,
        Method::POST,
        "/api/users/logout",
        None,
        Some(json!({"refresh_token": l1})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(refresh(&r, &l2).await.0, StatusCode::UNAUTHORIZED);
    // Garbage is simply unknown.
    for junk in ["", "x", "abc.def", &"a".repeat(300)] {
        assert_eq!(refresh(&r, junk).await.0, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn expired_sessions_are_refused_and_swept() {
    let (api, r) = app().await;
    let (id, _, token) = register(&r, "old").await;
    for _ in 0..2 {
        call(
            &r,
            Method::POST,
            "/api/users/login",
            None,
            Some(json!({"username": "old", "password": "a good password"})),
        )
        .await;
    }
    let (_, _, fresh) = register(&r, "fresh").await;
    assert_eq!(sessions_of(&api, &id).await, 3);
    // old's sessions expire.
    api.state()
        .db
        .query("UPDATE refresh_token SET expires_at = 1000 WHERE user = $u")
        .bind(("u", id.clone()))
        .await
        .unwrap()
        .check()
        .unwrap();
    let now = api::db::now_ms();
    // Bounded: at most `limit` a sweep.
    assert_eq!(api::sessions::sweep(api.state(), now, 2).await.unwrap(), 2);
    assert_eq!(sessions_of(&api, &id).await, 1);
    assert_eq!(api::sessions::sweep(api.state(), now, 2).await.unwrap(), 1);
    assert_eq!(sessions_of(&api, &id).await, 0);
    assert_eq!(api::sessions::sweep(api.state(), now, 2).await.unwrap(), 0);
    assert_eq!(refresh(&r, &token).await.0, StatusCode::UNAUTHORIZED);
    // An expired session not yet swept is refused as such, and deleted.
    let (s, v) = call(
        &r,
        Method::POST,
        "/api/users/login",
        None,
        Some(json!({"username": "old", "password": "a good password"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    api.state()
        .db
        .query("UPDATE refresh_token SET expires_at = 1000 WHERE user = $u")
        .bind(("u", id.clone()))
        .await
        .unwrap()
        .check()
        .unwrap();
    let (s, v) = refresh(&r, &next(&v)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["message"], "refresh token expired");
    assert_eq!(sessions_of(&api, &id).await, 0);
    // Live sessions are kept.
    assert_eq!(refresh(&r, &fresh).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_user_keeps_a_bounded_number_of_sessions() {
    let mut api = api::Api::connect("mem://", SECRET).await.unwrap();
    api.set_account_config(&AccountConfig {
        sessions_per_user: 3,
        ..AccountConfig::default()
    });
    let r = api.router();
    let (id, _, first) = register(&r, "many").await;
    for _ in 0..4 {
        let (s, _) = call(
            &r,
            Method::POST,
            "/api/users/login",
            None,
            Some(json!({"username": "many", "password": "a good password"})),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(sessions_of(&api, &id).await, 3);
    assert_eq!(
        refresh(&r, &first).await.0,
        StatusCode::UNAUTHORIZED,
        "the oldest session went"
    );
}
