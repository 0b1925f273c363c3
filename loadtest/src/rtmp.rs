//! RTMP publishers: ffmpeg sends the clip's FLV (H.264 + AAC) in a loop at real-time pace with
//! `-c copy`, so a publisher costs the harness almost nothing and the server gets what OBS would
//! send. Needs `ffmpeg` on the PATH.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::error::{Error, Result};

/// A running ffmpeg RTMP publisher; [`RtmpPublisher::stop`] ends the publish cleanly.
#[derive(Debug)]
pub struct RtmpPublisher {
    child: Child,
    started: Instant,
    pub url: String,
}

/// Publish the built-in clip to `rtmp://host:port/live/<key>` until stopped.
pub fn publish(rtmp_base: &str, key: &str) -> Result<RtmpPublisher> {
    let url = format!("{}/{key}", rtmp_base.trim_end_matches('/'));
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-stream_loop", "-1", "-i", crate::clip::CLIP_FLV])
        .args(["-c", "copy", "-f", "flv", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("starting ffmpeg: {e}"),
            ))
        })?;
    Ok(RtmpPublisher {
        child,
        started: Instant::now(),
        url,
    })
}

impl RtmpPublisher {
    /// Still running (ffmpeg exits when the server refuses or drops it).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// SIGTERM (ffmpeg unpublishes), then kill after 5 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// `rtmp://<host of server>:<port>/live`, the port from the server's `/api/ingest`.
pub async fn base_for(http: &reqwest::Client, server: &str) -> Result<String> {
    let url = reqwest::Url::parse(server).map_err(|e| Error::Url {
        url: server.to_owned(),
        reason: e.to_string(),
    })?;
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = async {
        let v: serde_json::Value = http
            .get(url.join("/api/ingest").ok()?)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["rtmp_port"].as_u64()
    }
    .await
    .unwrap_or(1935);
    Ok(format!("rtmp://{host}:{port}/live"))
}
