//! Parallel follows of one channel by one user make one follow (the unique index alone lets
//! parallel creates through on the embedded engines).

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_follows_of_one_pair_make_one_follow() {
    let (api, r) = app().await;
    let (channel, _, _) = register(&r, "streamer").await;
    let (_, fan, _) = register(&r, "fan").await;
    for round in 0..20 {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (r, fan, channel) = (r.clone(), fan.clone(), channel.clone());
                tokio::spawn(async move {
                    call(
                        &r,
                        Method::POST,
                        "/api/follows",
                        Some(&fan),
                        Some(json!({ "channel_id": channel })),
                    )
                    .await
                    .0
                })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            match t.await.unwrap() {
                StatusCode::CREATED => created += 1,
                StatusCode::CONFLICT => {}
                s => panic!("round {round}: {s}"),
            }
        }
        assert_eq!(created, 1, "round {round}");
        let mut res = api
            .state()
            .db
            .query("RETURN count((SELECT id FROM follow))")
            .await
            .unwrap();
        let n: Option<usize> = res.take(0).unwrap();
        assert_eq!(n, Some(1), "round {round}");
        let (s, _) = call(
            &r,
            Method::DELETE,
            &format!("/api/follows/{channel}"),
            Some(&fan),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
}
