//! Where the media core and the platform API meet: WHIP stream keys are checked against config
//! first, then the database; stream go-live/offline, viewer counts and replays flow from media to
//! the API; broadcasts are sampled for analytics; expired replays are deleted from the HLS
//! store and the database.
//!
//! Stream events reach the platform task through a bounded broadcast channel: when it lags
//! (events were lost), and at start, the database's live flags are made to agree with the media
//! core's own state ([`resync`]), so a lost `Offline` cannot leave a stream live forever.
//! Finished broadcasts come on a channel of their own (HLS announces them, not the SFU); one
//! lost there has no replay record, and its objects go at the next start's orphan sweep.

use std::sync::Arc;
use std::time::Duration;

use api::cluster::nodes::Viewers;
use media::hls::replay::Replay;
use media::{MediaHandle, StreamEvent, StreamSummary};
use signaling::{AuthError, AuthFuture, StaticKeys, StreamAuthorizer};
use tokio::sync::broadcast::{self, error::RecvError};
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
                    Ok(()) => return claim(&self.api, stream).await,
                    refused => return refused,
                }
            }
            let token = token.ok_or(AuthError::MissingToken)?;
            match self.api.check_stream_key(stream, token).await {
                Ok(Ok(())) => claim(&self.api, stream).await,
                Ok(Err(api::KeyCheck::WrongKey)) => Err(AuthError::InvalidToken),
                Ok(Err(api::KeyCheck::UnknownStream)) => Err(AuthError::UnknownStream),
                Err(e) => Err(AuthError::Backend(e.to_string())),
            }
        })
    }
}

/// One publisher per stream in the whole cluster: the stream is taken for this node before its
/// publisher is accepted, or refused (409) when another node has it. Redis unreachable: the node
/// decides alone (as a node alone does), and says so.
async fn claim(api: &api::Api, stream: &str) -> Result<(), AuthError> {
    match api.cluster().claim_stream(stream).await {
        Ok(api::cluster::nodes::Claim::Ours) => Ok(()),
        Ok(api::cluster::nodes::Claim::Elsewhere(node)) => {
            tracing::info!(stream, %node, "publisher refused: the stream is live from another node");
            Err(AuthError::LiveElsewhere(node))
        }
        Err(e) => {
            tracing::warn!(stream, error = %e, "could not claim the stream in the cluster's directory; accepted on this node's word");
            Ok(())
        }
    }
}

/// WHIP/WHEP session creation per address, counted on every node of the cluster (the same
/// burst and refill as one node's, as a GCRA in Redis).
pub struct ClusterSessionRate {
    pub cluster: api::cluster::Cluster,
    pub rate: api::ratelimit::Rate,
}

impl signaling::limit::SharedSessionRate for ClusterSessionRate {
    fn take<'a>(&'a self, addr: std::net::IpAddr) -> signaling::limit::SharedTake<'a> {
        Box::pin(async move {
            api::cluster::limits::sessions(&self.cluster, addr, self.rate)
                .await
                .map(|r| r.map_err(|wait| wait.0))
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
            let found = match self
                .config_keys
                .iter()
                .find(|(_, k)| bool::from(k.as_bytes().ct_eq(key.as_bytes())))
            {
                Some((name, _)) => Some(name.clone()),
                None => match self.api.stream_for_key(key).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::warn!(error = %e, "stream key lookup failed");
                        None
                    }
                },
            };
            let name = found?;
            claim(&self.api, &name).await.ok().map(|()| name)
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
/// core stops; finished broadcasts are recorded as replays kept for `replay_retention`;
/// broadcasts are sampled for analytics every `analytics_interval`.
pub fn spawn_sync(
    media: MediaHandle,
    api: api::Api,
    audience: std::sync::Arc<crate::audience::HlsAudience>,
    replay_retention: Duration,
    analytics_interval: Duration,
) -> JoinHandle<()> {
    let events = media.subscribe();
    let replays = media.subscribe_replays();
    tokio::spawn(run_sync(
        events,
        replays,
        media,
        api,
        audience,
        replay_retention,
        analytics_interval,
    ))
}

/// The platform task: `events` are the media core's (subscribed before anything else reads its
/// state, so nothing falls between the first resync and the first event); `replays` are the
/// broadcasts HLS stored as replays.
async fn run_sync(
    mut events: broadcast::Receiver<StreamEvent>,
    mut replays: broadcast::Receiver<Replay>,
    media: MediaHandle,
    api: api::Api,
    audience: Arc<crate::audience::HlsAudience>,
    replay_retention: Duration,
    analytics_interval: Duration,
) {
    match api.close_dangling_broadcasts().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(broadcasts = n, "closed broadcasts the last run left open"),
        Err(e) => tracing::warn!(error = %e, "could not close broadcasts left open"),
    }
    let mut sampler = crate::analytics::Sampler::default();
    // In a cluster: live streams found unclaimed at the last look (offline if still at the next).
    let mut suspects = std::collections::HashSet::new();
    // Streams the last run left live (it crashed, say) are not live now.
    let Ok(streams) = media.streams().await else {
        return;
    };
    resync(&api, &audience, &mut sampler, &streams, &mut suspects).await;
    let mut tick = tokio::time::interval(VIEWER_COUNT_INTERVAL);
    let mut sample_tick = tokio::time::interval(analytics_interval);
    sample_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut replays_open = true;
    // In a cluster: the streams this node last reported viewers of (a count gone to zero is
    // sent once), and every node's viewers of the streams it ingests, for analytics.
    let mut reported = std::collections::BTreeSet::new();
    let mut totals = std::collections::HashMap::new();
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(StreamEvent::Live { stream }) => {
                    record(&api, &stream, true).await;
                    if !sampler.on_air(&stream) {
                        sampler.begin(&api, &audience, &stream, api::db::now_ms()).await;
                    }
                }
                Ok(StreamEvent::Offline { stream }) => {
                    sampler.end(&api, &audience, &stream, api::db::now_ms()).await;
                    record(&api, &stream, false).await;
                    if let Err(e) = api.cluster().release_stream(&stream).await {
                        tracing::warn!(%stream, error = %e, "could not release the stream in the cluster's directory (its lease expires it)");
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "stream events lagged: resyncing live streams from the media core");
                    let Ok(streams) = media.streams().await else { return };
                    resync(&api, &audience, &mut sampler, &streams, &mut suspects).await;
                }
                Err(RecvError::Closed) => return,
            },
            r = replays.recv(), if replays_open => match r {
                Ok(replay) => keep_replay(&api, &replay, replay_retention).await,
                // Their objects stay until the next start's orphan sweep deletes them.
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "replay announcements lagged: those broadcasts get no replay")
                }
                Err(RecvError::Closed) => replays_open = false,
            },
            _ = sample_tick.tick() => {
                let Ok(streams) = media.streams().await else { return };
                let now = std::time::Instant::now();
                sampler.sample(&api, &audience, &streams, &totals, now, api::db::now_ms()).await;
            }
            _ = tick.tick() => {
                let Ok(streams) = media.streams().await else { return };
                let now = std::time::Instant::now();
                audience.prune(now);
                if api.cluster().is_clustered() {
                    totals = cluster_counts(&api, &audience, &streams, now, &mut reported).await;
                    // Streams of nodes that died stay live in the database until someone looks.
                    resync(&api, &audience, &mut sampler, &streams, &mut suspects).await;
                    continue;
                }
                for s in streams.iter().filter(|s| s.live) {
                    let viewers = s.viewers + audience.count(&s.name, now);
                    if let Err(e) = api.set_viewers(&s.name, viewers).await {
                        tracing::warn!(stream = %s.name, error = %e, "could not record viewer count");
                    }
                }
            }

        }
    }
}

/// In a cluster: this node's viewers of every stream it serves (WebRTC of its own streams, HLS
/// of any) go to Redis; for the streams it ingests, every node's are summed into the database
/// and the chat rooms.
async fn cluster_counts(
    api: &api::Api,
    audience: &crate::audience::HlsAudience,
    streams: &[StreamSummary],
    now: std::time::Instant,
    reported: &mut std::collections::BTreeSet<String>,
) -> std::collections::HashMap<String, Viewers> {
    let mut counts: std::collections::BTreeMap<String, Viewers> = audience
        .counts(now)
        .into_iter()
        .map(|(name, hls)| (name, Viewers { webrtc: 0, hls }))
        .collect();
    // HLS requests can name any stream: only those live somewhere in the cluster are reported.
    let others: Vec<String> = counts
        .keys()
        .filter(|n| !streams.iter().any(|s| s.live && &s.name == *n))
        .cloned()
        .collect();
    if !others.is_empty() {
        let owners = api
            .cluster()
            .stream_owners(&others)
            .await
            .unwrap_or_default();
        for (name, owner) in others
            .iter()
            .zip(owners.into_iter().chain(std::iter::repeat(None)))
        {
            if owner.is_none() {
                counts.remove(name);
            }
        }
    }
    for s in streams.iter().filter(|s| s.live) {
        counts.entry(s.name.clone()).or_default().webrtc += s.viewers;
    }
    // Zeros too: a stream this node no longer serves drops out of its sum at once.
    for name in reported.iter() {
        counts.entry(name.clone()).or_default();
    }
    let counts: Vec<(String, Viewers)> = counts.into_iter().collect();
    if let Err(e) = api.cluster().report_viewers(&counts).await {
        tracing::warn!(error = %e, "could not report viewer counts to the cluster");
    }
    *reported = counts
        .iter()
        .filter(|(_, v)| v.total() > 0)
        .map(|(n, _)| n.clone())
        .collect();
    let ours: Vec<String> = streams
        .iter()
        .filter(|s| s.live)
        .map(|s| s.name.clone())
        .collect();
    let totals = match api.cluster().total_viewers(&ours).await {
        Ok(Some(t)) => t,
        Ok(None) => return Default::default(),
        Err(e) => {
            tracing::warn!(error = %e, "could not sum viewer counts across the cluster: this node's own counted");
            ours.iter()
                .map(|n| {
                    counts
                        .iter()
                        .find(|(c, _)| c == n)
                        .map_or_else(Viewers::default, |(_, v)| *v)
                })
                .collect()
        }
    };
    for (name, total) in ours.iter().zip(&totals) {
        if let Err(e) = api.set_viewers(name, total.total()).await {
            tracing::warn!(stream = %name, error = %e, "could not record viewer count");
        }
    }
    ours.into_iter().zip(totals).collect()
}

/// How often a node renews its lease and its streams' claims.
const HEARTBEAT: Duration = api::cluster::HEARTBEAT;

/// In a cluster: renew this node's registry entry (with its load) and its claims on the
/// streams it ingests, every [`HEARTBEAT`], until aborted.
pub fn spawn_heartbeat(media: MediaHandle, api: api::Api, url: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut meter = LoadMeter::new(media.metrics().clone());
        loop {
            tick.tick().await;
            let Ok(streams) = media.streams().await else {
                return;
            };
            let live: Vec<String> = streams
                .iter()
                .filter(|s| s.live || s.reconnecting)
                .map(|s| s.name.clone())
                .collect();
            let info = api::cluster::nodes::NodeInfo {
                id: api.cluster().node_id().to_owned(),
                url: url.clone(),
                roles: vec!["ingest".into(), "webrtc".into(), "hls".into(), "api".into()],
                load: meter.sample(&streams, live.len()),
            };
            if let Err(e) = api.cluster().heartbeat(&info).await {
                tracing::warn!(error = %e, "cluster heartbeat failed");
                continue;
            }
            match api.cluster().renew_streams(&live).await {
                Ok(held) if held < live.len() => tracing::warn!(
                    held,
                    live = live.len(),
                    "some of this node's streams are claimed by another node in the cluster's directory"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not renew this node's stream claims"),
            }
        }
    })
}

/// A node's load between two heartbeats: forwarded bytes and the process's CPU time (from
/// `/proc/self/stat`), as rates.
struct LoadMeter {
    metrics: Arc<media::metrics::Metrics>,
    last: std::time::Instant,
    bytes: u64,
    cpu_ticks: u64,
}

/// Clock ticks per second of `/proc/*/stat` times (`_SC_CLK_TCK`, 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // After the command name (in parentheses, may hold spaces): utime is field 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

impl LoadMeter {
    fn new(metrics: Arc<media::metrics::Metrics>) -> Self {
        let bytes = metrics
            .bytes_forwarded
            .load(std::sync::atomic::Ordering::Relaxed);
        Self {
            metrics,
            last: std::time::Instant::now(),
            bytes,
            cpu_ticks: cpu_ticks(),
        }
    }

    fn sample(&mut self, streams: &[StreamSummary], live: usize) -> api::cluster::nodes::Load {
        let now = std::time::Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64().max(1e-3);
        let bytes = self
            .metrics
            .bytes_forwarded
            .load(std::sync::atomic::Ordering::Relaxed);
        let ticks = cpu_ticks();
        let load = api::cluster::nodes::Load {
            webrtc_viewers: streams.iter().map(|s| s.viewers).sum(),
            egress_mbps: bytes.saturating_sub(self.bytes) as f64 * 8.0 / 1e6 / secs,
            cpu: ticks.saturating_sub(self.cpu_ticks) as f64 / CLOCK_TICKS / secs,
            ladders: self
                .metrics
                .hls_transcoders
                .load(std::sync::atomic::Ordering::Relaxed) as usize,
            live_streams: live,
        };
        (self.last, self.bytes, self.cpu_ticks) = (now, bytes, ticks);
        load
    }
}

/// Which streams to mark offline (live in the database, not on air in the media core) and
/// which live (on air in the media core, not live in the database).
fn live_changes(db_live: &[String], media: &[StreamSummary]) -> (Vec<String>, Vec<String>) {
    let on_air: std::collections::HashSet<&str> = media
        .iter()
        .filter(|s| s.live)
        .map(|s| s.name.as_str())
        .collect();
    let offline = db_live
        .iter()
        .filter(|n| !on_air.contains(n.as_str()))
        .cloned()
        .collect();
    let mut live: Vec<String> = on_air
        .iter()
        .filter(|n| !db_live.iter().any(|d| d == *n))
        .map(|n| (*n).to_owned())
        .collect();
    live.sort();
    (offline, live)
}

/// Make the database's live flags (and the open analytics broadcasts) agree with `media`, the
/// media core's streams: what events were lost is read from its state instead.
async fn resync(
    api: &api::Api,
    audience: &crate::audience::HlsAudience,
    sampler: &mut crate::analytics::Sampler,
    media: &[StreamSummary],
    suspects: &mut std::collections::HashSet<String>,
) {
    let db_live = match api.live_stream_names().await {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(error = %e, "could not read live streams to resync");
            return;
        }
    };
    let (mut offline, live) = live_changes(&db_live, media);
    // In a cluster, a stream another node ingests is not offline: only those whose claim is
    // gone (their node stopped or died) at two looks in a row — a Redis that restarted empty
    // has every claim back within a heartbeat.
    if api.cluster().is_clustered() && !offline.is_empty() {
        match api.cluster().stream_owners(&offline).await {
            Ok(owners) => {
                let mut owners = owners.into_iter();
                offline.retain(|_| owners.next().flatten().is_none());
                let unclaimed: std::collections::HashSet<String> =
                    offline.iter().cloned().collect();
                offline.retain(|s| suspects.contains(s));
                *suspects = unclaimed;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the cluster's directory: live flags left as they are");
                offline.clear();
            }
        }
    }
    let now_ms = api::db::now_ms();
    for stream in &offline {
        tracing::info!(%stream, "resync: not on air, marked offline");
        sampler.end(api, audience, stream, now_ms).await;
        record(api, stream, false).await;
    }
    for stream in &live {
        record(api, stream, true).await;
        if !sampler.on_air(stream) {
            sampler.begin(api, audience, stream, now_ms).await;
        }
    }
}

/// Delete the objects of broadcasts the last run left with no replay record (at start), then
/// delete replays whose time is up (retention over, or deleted by their owner), until aborted.
pub fn spawn_replay_expiry(
    media: MediaHandle,
    api: api::Api,
    replay_retention: Duration,
) -> JoinHandle<()> {
    // Broadcasts of this run start after this (nothing is published before start returns).
    let started_at_ms = api::db::now_ms().max(0) as u64;
    tokio::spawn(async move {
        let Some(replays) = media.replays().cloned() else {
            return;
        };
        sweep_orphans(&api, &replays, started_at_ms).await;
        if replay_retention.is_zero() {
            return;
        }
        let mut expiry = tokio::time::interval(expiry_interval(replay_retention));
        loop {
            expiry.tick().await;
            expire_replays(&api, &replays).await;
        }
    })
}

/// Delete every broadcast in the HLS store that began before `before_epoch_ms` and has no
/// replay record: a run that died mid-broadcast left its segments (and, replays off, its last
/// live window) behind, and nothing else would ever delete them. Returns how many.
async fn sweep_orphans(
    api: &api::Api,
    replays: &media::hls::replay::Replays,
    before_epoch_ms: u64,
) -> usize {
    let stored = match replays.stored().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the HLS store for orphaned broadcasts");
            return 0;
        }
    };
    let known: std::collections::HashSet<(String, i64)> = match api.video_epochs().await {
        Ok(v) => v.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read replay records; orphaned broadcasts kept");
            return 0;
        }
    };
    let mut deleted = 0;
    for b in stored.iter().filter(|b| b.epoch < before_epoch_ms) {
        if known.contains(&(b.stream.clone(), b.epoch as i64)) {
            continue;
        }
        match replays.delete(&b.stream, b.epoch, &b.renditions).await {
            Ok(()) => {
                deleted += 1;
                tracing::info!(stream = %b.stream, epoch = b.epoch, "deleted a broadcast's objects that had no replay record");
            }
            Err(e) => {
                tracing::warn!(stream = %b.stream, epoch = b.epoch, error = %e, "could not delete an orphaned broadcast")
            }
        }
    }
    deleted
}

/// How often old chat messages are deleted.
const CHAT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Delete chat messages older than the chat retention and notifications older than theirs,
/// every hour, until aborted.
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
            match api.prune_notifications(api::db::now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(notifications = n, "old notifications deleted"),
                Err(e) => tracing::warn!(error = %e, "could not prune notifications"),
            }
        }
    })
}

async fn keep_replay(api: &api::Api, replay: &Replay, retention: Duration) {
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
        Ok(true) => tracing::info!(stream, "went live; notifying followers"),
        Ok(false) => {}
        Err(e) => tracing::warn!(stream, live, error = %e, "could not record stream state"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::sfu::peer::PublishedTrack;
    use media::Departure;

    fn summary(name: &str, live: bool) -> StreamSummary {
        StreamSummary {
            name: name.into(),
            live,
            reconnecting: false,
            viewers: 0,
            codecs: Vec::new(),
            bytes_in: 0,
            keyframe_interval_ms: None,
            viewers_served: 0,
        }
    }

    #[test]
    fn resync_changes_only_what_differs() {
        let db_live = vec!["gone".to_owned(), "both".to_owned()];
        let media = [
            summary("both", true),
            summary("new", true),
            summary("idle", false),
        ];
        let (offline, live) = live_changes(&db_live, &media);
        assert_eq!(offline, ["gone"]);
        assert_eq!(live, ["new"]);
        assert_eq!(live_changes(&[], &[]), (vec![], vec![]));
    }

    async fn is_live(api: &api::Api, name: &str) -> bool {
        api.live_stream_names()
            .await
            .unwrap()
            .iter()
            .any(|n| n == name)
    }

    async fn set_live_in_db(api: &api::Api, name: &str, live: bool) {
        api.state()
            .db
            .query("UPSERT type::record('stream', $n) SET owner = $n, name = $n, title = 't', tags = [], stream_key = 'k', live = $live, viewers = 0, created_at = 0")
            .bind(("n", name.to_owned()))
            .bind(("live", live))
            .await
            .unwrap()
            .check()
            .unwrap();
    }

    /// Poll (with a yield between tries) until `check` holds; panics after 10 s.
    async fn eventually<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !check().await {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn broadcasts_without_a_replay_record_are_swept_at_start() {
        use media::hls::store::{Kind, LocalDir, SegmentStore};
        let root = std::env::temp_dir().join(format!("glint-sweep-{}", rand::random::<u64>()));
        let store = std::sync::Arc::new(LocalDir::new(root.clone()));
        let files = [
            "alice/source/index.m3u8",
            "alice/source/seg-100-00000.ts", // orphan: no record
            "alice/360p/seg-100-00000.ts",
            "alice/videos/100/master.m3u8",
            "alice/source/seg-200-00000.ts", // recorded
            "alice/videos/200/master.m3u8",
            "alice/source/seg-900-00000.ts", // began after start
        ];
        for f in files {
            let kind = Kind::of_path(f).unwrap();
            store.put(f, "x".into(), kind).await.unwrap();
        }
        let replays = media::hls::replay::Replays::new(store.clone());
        let api = api::Api::connect("mem://", &[7; 32]).await.unwrap();
        api.add_video(api::videos::NewVideo {
            stream_name: "alice",
            epoch: 200,
            ended_at: 300,
            duration_ms: 100,
            renditions: &["source".to_owned()],
            retention_ms: 1_000_000,
        })
        .await
        .unwrap();
        assert_eq!(sweep_orphans(&api, &replays, 500).await, 1);
        assert_eq!(
            store.list("").await.unwrap(),
            [
                "alice/source/index.m3u8",
                "alice/source/seg-200-00000.ts",
                "alice/source/seg-900-00000.ts",
                "alice/videos/200/master.m3u8",
            ]
        );
        assert_eq!(
            sweep_orphans(&api, &replays, 500).await,
            0,
            "nothing left to do"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    /// The task's event channel holds one event here, so three sent at once make it lag.
    #[tokio::test]
    async fn a_lagging_platform_task_resyncs_from_the_media_core() {
        let api = api::Api::connect("mem://", &[7; 32]).await.unwrap();
        set_live_in_db(&api, "alice", true).await; // the last run left her live
        set_live_in_db(&api, "bob", false).await;
        let config = media::MediaConfig {
            udp_bind: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        };
        let (media, _media_task) = media::spawn(config).await.unwrap();
        // Bob is on air in the media core; no event about it reaches the task's channel.
        let bob = media
            .publish_ingest("bob", vec![PublishedTrack::h264("42e01f")])
            .await
            .unwrap();
        let (tx, rx) = broadcast::channel(1);
        let hour = Duration::from_secs(3600);
        let task = tokio::spawn(run_sync(
            rx,
            media.subscribe_replays(),
            media.clone(),
            api.clone(),
            Arc::default(),
            hour,
            hour,
        ));
        eventually("at start: alice offline, bob live", || async {
            !is_live(&api, "alice").await && is_live(&api, "bob").await
        })
        .await;

        // Alice's Offline and Bob's end are lost in a lag.
        set_live_in_db(&api, "alice", true).await;
        media.close_ingest(bob, "test", Departure::Ended).await;
        eventually("bob off air in the media core", || async {
            !media.streams().await.unwrap().iter().any(|s| s.live)
        })
        .await;
        for _ in 0..3 {
            tx.send(StreamEvent::Offline {
                stream: "nobody".into(),
            })
            .unwrap();
        }
        eventually("after the lag: alice and bob offline", || async {
            !is_live(&api, "alice").await && !is_live(&api, "bob").await
        })
        .await;
        task.abort();
        media.shutdown().await;
    }
}
