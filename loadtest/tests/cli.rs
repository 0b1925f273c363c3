//! The `glint-loadtest viewers` binary runs a bounded load test and prints a JSON report.

mod common;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_subcommand_reports_delivery_and_server_cost() {
    let server = common::MockServer::start().await;
    // The mock runs inside this test process, so its pid is ours.
    let pid = std::process::id().to_string();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_glint-loadtest"))
        .args([
            "viewers",
            "--server",
            &server.base,
            "--stream",
            "load",
            "--count",
            "12",
            "--duration",
            "2",
            "--ramp",
            "40",
            "--publish",
            common::KEY,
            "--server-pid",
            &pid,
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run is bounded")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{stderr}");

    assert_eq!(report["viewers_requested"], 12, "{stderr}");
    assert_eq!(report["viewers_connected"], 12, "{stderr}");
    assert_eq!(report["viewers_failed"], 0);
    assert_eq!(report["payload_mismatches"], 0);
    assert!(
        report["video_packets"].as_u64().unwrap() > 12 * 50,
        "{report}"
    );
    assert!(
        report["audio_packets"].as_u64().unwrap() > 12 * 50,
        "{report}"
    );
    assert_eq!(report["first_keyframe"]["count"], 12);
    assert!(report["first_keyframe"]["p95_ms"].as_f64().unwrap() < 2000.0);
    assert!(report["publisher"]["plis_received"].as_u64().unwrap() >= 1);
    let cpu = report["server"]["cpu_us_per_packet"].as_f64().unwrap();
    assert!(cpu > 0.0, "{report}");
    assert!(report["server"]["rss_kib_per_viewer"].is_number());
    assert!(stderr.contains("12 connected"), "{stderr}");
}
