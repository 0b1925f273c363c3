//! Where the media core and the platform API meet: WHIP stream keys are checked against config
//! first, then the database; stream go-live/offline, viewer counts and replays flow from media to
//! the API; broadcasts are sampled for analytics; expired replays are deleted from the HLS
//! store and the database.

use std::sync::Arc;
use std::time::Duration;

use media::{MediaHandle, StreamEvent};
use signaling::{AuthError, AuthFuture, StaticKeys, StreamAuthorizer};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// How often viewer counts (WebRTC + HLS) are copied into the database and to chat rooms.
const VIEWER_COUNT_INTERVAL: Duration = Duration::from_secs(5);

/// Config keys, then each channel's own key in the database.
pub struct Authorizer {
    pub config_keys: Option<StaticKeys>,
    pub api: api::Api,
}

impl StreamAuthorizer for Authorizer {
    fn authorize_publish<'a>(&'a self, stream: &'a str, token: Option<&'a str>) -> AuthFuture<'a> {
        Box::pin(async move {
            if let Some(keys) = &self.config_keys {
                match keys.authorize_publish(stream, token).await {
                    Err(AuthError::UnknownStream) => {}
                    decided => return decided,
                }
            }
            let token = token.ok_or(AuthError::MissingToken)?;
            match self.api.check_stream_key(stream, token).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(api::KeyCheck::WrongKey)) => Err(AuthError::InvalidToken),
                Ok(Err(api::KeyCheck::UnknownStream)) => Err(AuthError::UnknownStream),
                Err(e) => Err(AuthError::Backend(e.to_string())),
            }
        })
    }
}

/// RTMP: the key alone says which stream (config keys first, then the database).
pub struct RtmpKeys {
    pub config_keys: std::collections::HashMap<String, String>,
    pub api: api::Api,
}

impl media::ingest::rtmp::listener::StreamKeys for RtmpKeys {
    fn stream_for_key<'a>(&'a self, key: &'a str) -> media::ingest::rtmp::listener::KeyFuture<'a> {
        Box::pin(async move {
            use subtle::ConstantTimeEq;
            if let Some((name, _)) = self
                .config_keys
                .iter()
                .find(|(_, k)| bool::from(k.as_bytes().ct_eq(key.as_bytes())))
            {
                return Some(name.clone());
            }
            match self.api.stream_for_key(key).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "stream key lookup failed");
                    None
                }
            }
        })
    }
}

/// The API's hook for rotated stream keys: the stream's RTMP connections are closed, and the
/// media core ends its publisher (WHIP session, or the RTMP ingest) and takes it off the air.
pub struct EndPublisher {
    pub media: MediaHandle,
    pub rtmp: media::ingest::rtmp::publishers::RtmpPublishers,
}

impl api::publishers::PublisherControl for EndPublisher {
    fn end_publisher<'a>(&'a self, stream: &'a str) -> api::publishers::EndFuture<'a> {
        Box::pin(async move {
            let connections = self.rtmp.end(stream);
            match self.media.end_publisher(stream, "stream key rotated").await {
                Ok(ended) => tracing::info!(
                    stream,
                    ended,
                    rtmp_connections = connections,
                    "stream key rotated: publisher ended"
                ),
                Err(e) => tracing::warn!(stream, error = %e, "could not end the publisher"),
            }
        })
    }
}

pub fn authorizer(config_keys: Option<StaticKeys>, api: api::Api) -> Arc<dyn StreamAuthorizer> {
    Arc::new(Authorizer { config_keys, api })
}

/// How often expired replays are looked for: a quarter of the retention, between 1 s and 1 min.
fn expiry_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Expired replays deleted per round.
const EXPIRY_BATCH: u32 = 100;

/// Follow the media core's stream events and viewer counts into the database until the media
/// core stops; replays are kept for `replay_retention`; broadcasts are sampled for analytics
/// every `analytics_interval`.
pub fn spawn_sync(
    media: MediaHandle,
    api: api::Api,
    audience: std::sync::Arc<crate::audience::HlsAudience>,
    replay_retention: Duration,
    analytics_interval: Duration,
) -> JoinHandle<()> {
    let mut events = media.subscribe();
    tokio::spawn(async move {
        match api.close_dangling_broadcasts().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(broadcasts = n, "closed broadcasts the last run left open"),
            Err(e) => tracing::warn!(error = %e, "could not close broadcasts left open"),
        }
        let mut sampler = crate::analytics::Sampler::default();
        let mut tick = tokio::time::interval(VIEWER_COUNT_INTERVAL);
        let mut sample_tick = tokio::time::interval(analytics_interval);
        sample_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(StreamEvent::Live { stream }) => {
                        record(&api, &stream, true).await;
                        sampler.begin(&api, &audience, &stream, api::db::now_ms()).await;
                    }
                    Ok(StreamEvent::Offline { stream }) => {
                        sampler.end(&api, &audience, &stream, api::db::now_ms()).await;
                        record(&api, &stream, false).await;
                    }
                    Ok(StreamEvent::Replay(replay)) => keep_replay(&api, &replay, replay_retention).await,
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "stream events lagged"),
                    Err(RecvError::Closed) => return,
                },
                _ = sample_tick.tick() => {
                    let Ok(streams) = media.streams().await else { return };
                    let now = std::time::Instant::now();
                    sampler.sample(&api, &audience, &streams, now, api::db::now_ms()).await;
                }
                _ = tick.tick() => {
                    let Ok(streams) = media.streams().await else { return };
                    let now = std::time::Instant::now();
                    audience.prune(now);
                    for s in streams.iter().filter(|s| s.live) {
                        let viewers = s.viewers + audience.count(&s.name, now);
                        if let Err(e) = api.set_viewers(&s.name, viewers).await {
                            tracing::warn!(stream = %s.name, error = %e, "could not record viewer count");
                        }
                    }
                }

            }
        }
    })
}

/// Delete replays whose time is up (retention over, or deleted by their owner), until aborted.
pub fn spawn_replay_expiry(
    media: MediaHandle,
    api: api::Api,
    replay_retention: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(replays) = media
            .replays()
            .cloned()
            .filter(|_| !replay_retention.is_zero())
        else {
            return;
        };
        let mut expiry = tokio::time::interval(expiry_interval(replay_retention));
        loop {
            expiry.tick().await;
            expire_replays(&api, &replays).await;
        }
    })
}

/// How often old chat messages are deleted.
const CHAT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Delete chat messages older than the chat retention, every hour, until aborted.
pub fn spawn_chat_pruning(api: api::Api) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHAT_PRUNE_INTERVAL);
        loop {
            tick.tick().await;
            let before = api::db::now_ms() - api::chat::RETENTION.as_millis() as i64;
            match api.prune_chat(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(messages = n, "old chat messages deleted"),
                Err(e) => tracing::warn!(error = %e, "could not prune chat messages"),
            }
        }
    })
}

async fn keep_replay(api: &api::Api, replay: &media::hls::replay::Replay, retention: Duration) {
    let video = api::videos::NewVideo {
        stream_name: &replay.stream,
        epoch: replay.epoch as i64,
        ended_at: replay.ended_at_ms as i64,
        duration_ms: replay.duration_ms as i64,
        renditions: &replay.renditions,
        retention_ms: retention.as_millis() as i64,
    };
    match api.add_video(video).await {
        Ok(id) => tracing::info!(stream = %replay.stream, video = %id, "replay recorded"),
        Err(e) => tracing::warn!(stream = %replay.stream, error = %e, "could not record replay"),
    }
}

/// Delete the objects of replays whose time is up, then their records.
async fn expire_replays(api: &api::Api, replays: &media::hls::replay::Replays) {
    let expired = match api.expired_videos(api::db::now_ms(), EXPIRY_BATCH).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for expired replays");
            return;
        }
    };
    for v in expired {
        if let Err(e) = replays
            .delete(&v.stream_name, v.epoch as u64, &v.renditions)
            .await
        {
            // Kept in the database: the next round tries again.
            tracing::warn!(video = %v.id, error = %e, "could not delete an expired replay's objects");
            continue;
        }
        match api.forget_video(&v.id).await {
            Ok(()) => {
                tracing::info!(stream = %v.stream_name, video = %v.id, "replay expired and deleted")
            }
            Err(e) => tracing::warn!(video = %v.id, error = %e, "could not delete replay record"),
        }
    }
}

async fn record(api: &api::Api, stream: &str, live: bool) {
    match api.set_live(stream, live).await {
        Ok(notified) if live => tracing::info!(stream, notified, "went live; followers notified"),
        Ok(_) => {}
        Err(e) => tracing::warn!(stream, live, error = %e, "could not record stream state"),
    }
}
