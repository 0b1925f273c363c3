//! One server per data directory: a second server on the same directory refuses to start (two
//! servers on one embedded SurrealKV database corrupt it); after the first stops, it starts.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let dir = tempdir::Dir::new();
    let config = || {
        let mut c = test_config(&dir);
        c.database = None; // the embedded default: surrealkv://<data_dir>/db
        c
    };
    let first = glint::start(config())
        .await
        .expect("the first server starts");
    let err = glint::start(config())
        .await
        .err()
        .expect("the second is refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("in use by another glint"), "{msg}");
    assert!(
        msg.contains(&std::process::id().to_string()),
        "names the holder: {msg}"
    );
    first.shutdown().await;
    let again = glint::start(config())
        .await
        .expect("free again after shutdown");
    again.shutdown().await;
}
