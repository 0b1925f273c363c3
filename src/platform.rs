//! Where the media core and the platform API meet: WHIP stream keys are checked against config
//! first, then the database; stream go-live/offline and viewer counts flow from media to the API.

use std::sync::Arc;
use std::time::Duration;

use media::{MediaHandle, StreamEvent};
use signaling::{AuthError, AuthFuture, StaticKeys, StreamAuthorizer};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// How often viewer counts are copied into the database (for listing by viewers).
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

pub fn authorizer(config_keys: Option<StaticKeys>, api: api::Api) -> Arc<dyn StreamAuthorizer> {
    Arc::new(Authorizer { config_keys, api })
}

/// Follow the media core's stream events and viewer counts into the database until the media
/// core stops.
pub fn spawn_sync(media: MediaHandle, api: api::Api) -> JoinHandle<()> {
    let mut events = media.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(VIEWER_COUNT_INTERVAL);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(StreamEvent::Live { stream }) => record(&api, &stream, true).await,
                    Ok(StreamEvent::Offline { stream }) => record(&api, &stream, false).await,
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "stream events lagged"),
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    let Ok(streams) = media.streams().await else { return };
                    for s in streams.iter().filter(|s| s.live) {
                        if let Err(e) = api.set_viewers(&s.name, s.viewers).await {
                            tracing::warn!(stream = %s.name, error = %e, "could not record viewer count");
                        }
                    }
                }
            }
        }
    })
}

async fn record(api: &api::Api, stream: &str, live: bool) {
    match api.set_live(stream, live).await {
        Ok(notified) if live => tracing::info!(stream, notified, "went live; followers notified"),
        Ok(_) => {}
        Err(e) => tracing::warn!(stream, live, error = %e, "could not record stream state"),
    }
}
