//! HTTP failures surface as typed errors carrying the status the server chose.

mod common;

use loadtest::{publish, view, Error, PublishConfig, StatusCode, ViewConfig};

#[tokio::test]
async fn wrong_stream_key_is_401() {
    let server = common::MockServer::start().await;
    let err = publish(PublishConfig::new(&server.base, "cam", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED), "{err}");
}

#[tokio::test]
async fn viewing_an_unknown_stream_is_404() {
    let server = common::MockServer::start().await;
    let err = view(ViewConfig::new(&server.base, "nobody"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND), "{err}");
}

#[tokio::test]
async fn second_publisher_is_409() {
    let server = common::MockServer::start().await;
    let first = publish(PublishConfig::new(&server.base, "cam", common::KEY))
        .await
        .unwrap();
    let err = publish(PublishConfig::new(&server.base, "cam", common::KEY))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::CONFLICT), "{err}");
    first.stop().await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_a_request_error() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = view(ViewConfig::new(format!("http://127.0.0.1:{port}"), "s"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Request { .. }), "{err}");
    assert_eq!(err.status(), None);
}
