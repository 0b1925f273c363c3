//! One channel's chat room: who may say what (bans, timeouts, slow mode, followers-only, rate
//! limit), the recent messages new readers get, and the broadcast of serialized frames every
//! reader shares. State sits behind a `std` mutex never held across an `.await`; the database
//! is written by the caller outside it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast;

use super::{ChatConfig, ChatMessage, Event, Settings};
use crate::cluster::RoomEvent;

/// Why a send or a moderation action was refused; `code` goes to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A user's standing in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restriction {
    /// Until this time (Unix ms).
    TimedOut(i64),
    Banned,
}

pub struct Room {
    /// The channel: its owner's user id and name.
    pub channel_id: String,
    pub channel_name: String,
    /// Serialized event frames, shared by every reader (one serialization per event).
    tx: broadcast::Sender<Utf8Bytes>,
    state: Mutex<State>,
    config: ChatConfig,
    viewers: std::sync::atomic::AtomicUsize,
}

pub(crate) struct Loaded {
    pub history: Vec<ChatMessage>,
    pub moderators: HashSet<String>,
    pub restrictions: HashMap<String, Restriction>,
    pub settings: Settings,
}

struct State {
    history: VecDeque<ChatMessage>,
    moderators: HashSet<String>,
    restrictions: HashMap<String, Restriction>,
    settings: Settings,
    /// Per user: times (ms) of their recent messages, newest last.
    sent: HashMap<String, VecDeque<i64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Room {
    pub(crate) fn new(
        channel_id: String,
        channel_name: String,
        loaded: Loaded,
        config: ChatConfig,
    ) -> Self {
        let (tx, _) = broadcast::channel(config.reader_buffer);
        let mut history: VecDeque<ChatMessage> = loaded.history.into();
        while history.len() > config.history {
            history.pop_front();
        }
        Self {
            channel_id,
            channel_name,
            tx,
            state: Mutex::new(State {
                history,
                moderators: loaded.moderators,
                restrictions: loaded.restrictions,
                settings: loaded.settings,
                sent: HashMap::new(),
            }),
            config,
            viewers: Default::default(),
        }
    }

    /// The stream's viewers, as last told.
    pub fn viewers(&self) -> usize {
        self.viewers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tell every reader the stream's viewer count (only when it changed).
    pub fn set_viewers(&self, count: usize) {
        if self
            .viewers
            .swap(count, std::sync::atomic::Ordering::Relaxed)
            != count
        {
            self.publish(&Event::Viewers { count });
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Utf8Bytes> {
        self.tx.subscribe()
    }

    pub fn readers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Serialize once, send to every reader.
    pub fn publish(&self, event: &Event) {
        if let Ok(json) = serde_json::to_string(event) {
            let _ = self.tx.send(Utf8Bytes::from(json));
        }
    }

    pub fn history(&self) -> Vec<ChatMessage> {
        lock(&self.state).history.iter().cloned().collect()
    }

    pub fn settings(&self) -> Settings {
        lock(&self.state).settings
    }

    /// The owner and the moderators the owner named.
    pub fn is_moderator(&self, user: &str) -> bool {
        user == self.channel_id || lock(&self.state).moderators.contains(user)
    }

    pub fn set_moderator(&self, user: &str, on: bool) {
        let mut s = lock(&self.state);
        if on {
            s.moderators.insert(user.to_owned());
        } else {
            s.moderators.remove(user);
        }
    }

    /// May `user` send now? Records the send when it may (rate limit and slow mode count it).
    /// Followers-only is checked by the caller (it needs the database).
    pub fn admit(&self, user: &str, now: i64) -> Result<(), Refusal> {
        self.check_restrictions(user, now)?;
        self.admit_rate(user, now)
    }

    /// Is `user` banned or timed out at `now`?
    pub fn check_restrictions(&self, user: &str, now: i64) -> Result<(), Refusal> {
        let mut s = lock(&self.state);
        match s.restrictions.get(user).copied() {
            Some(Restriction::Banned) => {
                return Err(Refusal::new("banned", "you are banned from this chat"))
            }
            Some(Restriction::TimedOut(until)) if until > now => {
                return Err(Refusal::new(
                    "timed_out",
                    format!(
                        "you are timed out for {} more seconds",
                        (until - now + 999) / 1000
                    ),
                ))
            }
            Some(Restriction::TimedOut(_)) => {
                s.restrictions.remove(user);
            }
            None => {}
        }
        Ok(())
    }

    /// Slow mode and the rate limit, counted on this node (a node alone, or its cluster's
    /// Redis unreachable); records the send when it may.
    pub fn admit_rate(&self, user: &str, now: i64) -> Result<(), Refusal> {
        let moderator = self.is_moderator(user);
        let mut s = lock(&self.state);
        let slow_ms = i64::from(s.settings.slow_mode_secs) * 1000;
        let (limit, window) = self.config.rate;
        let window_ms = window.as_millis() as i64;
        let sent = s.sent.entry(user.to_owned()).or_default();
        while sent
            .front()
            .is_some_and(|&t| t <= now - window_ms.max(slow_ms))
        {
            sent.pop_front();
        }
        if !moderator && slow_ms > 0 {
            if let Some(&last) = sent.back() {
                if now - last < slow_ms {
                    return Err(Refusal::new(
                        "slow_mode",
                        format!("slow mode: one message every {} seconds", slow_ms / 1000),
                    ));
                }
            }
        }
        if sent.iter().filter(|&&t| t > now - window_ms).count() >= limit {
            return Err(Refusal::new(
                "rate_limited",
                format!(
                    "at most {limit} messages every {} seconds",
                    window.as_secs()
                ),
            ));
        }
        sent.push_back(now);
        Ok(())
    }

    /// Take in a change (made here, or on another node of the cluster).
    pub fn apply(&self, event: RoomEvent) {
        match event {
            RoomEvent::Message(m) => self.post(m),
            RoomEvent::Delete { id } => self.delete(&id),
            RoomEvent::Restrict {
                user_id,
                restriction,
            } => self.restrict(&user_id, restriction),
            RoomEvent::Settings(s) => self.set_settings(s),
            RoomEvent::Moderator { user_id, on } => self.set_moderator(&user_id, on),
            RoomEvent::Viewers { count } => self.set_viewers(count),
        }
    }

    /// A message was stored: keep it for new readers and send it to everyone.
    pub fn post(&self, message: ChatMessage) {
        {
            let mut s = lock(&self.state);
            // A room loaded from the database while the message was on its way holds it already.
            if s.history.iter().rev().any(|m| m.id == message.id) {
                return;
            }
            s.history.push_back(message.clone());
            while s.history.len() > self.config.history {
                s.history.pop_front();
            }
            // Users who stopped sending leave the rate table.
            if s.sent.len() > 10_000 {
                let cutoff = message.at - 60_000;
                s.sent
                    .retain(|_, times| times.back().is_some_and(|&t| t > cutoff));
            }
        }
        self.publish(&Event::Message(message));
    }

    pub fn delete(&self, id: &str) {
        lock(&self.state).history.retain(|m| m.id != id);
        self.publish(&Event::Delete { id: id.to_owned() });
    }

    /// Time out or ban `user` (`None`: lift it); their messages leave the history.
    pub fn restrict(&self, user: &str, restriction: Option<Restriction>) {
        {
            let mut s = lock(&self.state);
            match restriction {
                Some(r) => {
                    s.restrictions.insert(user.to_owned(), r);
                    s.history.retain(|m| m.author_id != user);
                }
                None => {
                    s.restrictions.remove(user);
                }
            }
        }
        self.publish(&match restriction {
            Some(Restriction::TimedOut(until)) => Event::Timeout {
                user_id: user.to_owned(),
                until,
            },
            Some(Restriction::Banned) => Event::Ban {
                user_id: user.to_owned(),
            },
            None => Event::Unban {
                user_id: user.to_owned(),
            },
        });
    }

    pub fn set_settings(&self, settings: Settings) {
        lock(&self.state).settings = settings;
        self.publish(&Event::Settings(settings));
    }
}

/// The rooms with readers, by channel id.
#[derive(Default)]
pub struct Rooms {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
}

impl Rooms {
    pub fn get(&self, channel_id: &str) -> Option<Arc<Room>> {
        lock(&self.rooms).get(channel_id).cloned()
    }

    /// The room now in the map for its channel (another reader may have made it first).
    pub fn insert(&self, room: Room) -> Arc<Room> {
        lock(&self.rooms)
            .entry(room.channel_id.clone())
            .or_insert_with(|| Arc::new(room))
            .clone()
    }

    /// Forget the room when its last reader left.
    pub fn release(&self, room: &Arc<Room>) {
        let mut rooms = lock(&self.rooms);
        if room.readers() == 0 {
            if let Some(r) = rooms.get(&room.channel_id) {
                if Arc::ptr_eq(r, room) {
                    rooms.remove(&room.channel_id);
                }
            }
        }
    }

    /// Every room with readers.
    pub fn all(&self) -> Vec<Arc<Room>> {
        lock(&self.rooms).values().cloned().collect()
    }

    /// The room of the channel named `name`, if it has readers.
    pub fn by_name(&self, name: &str) -> Option<Arc<Room>> {
        lock(&self.rooms)
            .values()
            .find(|r| r.channel_name == name)
            .cloned()
    }

    /// Readers per channel id.
    pub fn readers(&self) -> Vec<(String, usize)> {
        lock(&self.rooms)
            .iter()
            .map(|(id, r)| (id.clone(), r.readers()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn room(config: ChatConfig) -> Room {
        Room::new(
            "owner".into(),
            "alice".into(),
            Loaded {
                history: Vec::new(),
                moderators: HashSet::from(["mod".to_string()]),
                restrictions: HashMap::new(),
                settings: Settings::default(),
            },
            config,
        )
    }

    #[test]
    fn rate_limit_slow_mode_and_restrictions() {
        let r = room(ChatConfig {
            rate: (3, Duration::from_secs(5)),
            ..ChatConfig::default()
        });
        for t in 0..3 {
            r.admit("bob", 1_000 + t).unwrap();
        }
        assert_eq!(r.admit("bob", 1_003).unwrap_err().code, "rate_limited");
        r.admit("bob", 6_001).unwrap(); // the window moved on
        r.set_settings(Settings {
            slow_mode_secs: 10,
            followers_only: false,
        });
        assert_eq!(r.admit("bob", 7_000).unwrap_err().code, "slow_mode");
        r.admit("mod", 7_000).unwrap();
        r.admit("mod", 7_001).unwrap(); // moderators skip slow mode
        r.admit("bob", 16_001).unwrap();
        r.restrict("bob", Some(Restriction::TimedOut(30_000)));
        assert_eq!(r.admit("bob", 29_999).unwrap_err().code, "timed_out");
        r.admit("bob", 30_000).unwrap();
        r.restrict("bob", Some(Restriction::Banned));
        assert_eq!(r.admit("bob", 90_000).unwrap_err().code, "banned");
        r.restrict("bob", None);
        r.admit("bob", 90_000).unwrap();
        assert!(r.is_moderator("owner") && r.is_moderator("mod") && !r.is_moderator("bob"));
    }

    #[test]
    fn history_keeps_the_newest_and_forgets_restricted_users() {
        let r = room(ChatConfig {
            history: 3,
            ..ChatConfig::default()
        });
        for (i, author) in ["bob", "carol", "bob", "carol"].iter().enumerate() {
            r.post(ChatMessage {
                id: format!("m{i}"),
                author_id: author.to_string(),
                author: author.to_string(),
                text: "hi".into(),
                at: i as i64,
            });
        }
        let ids = |r: &Room| r.history().into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(&r), ["m1", "m2", "m3"]);
        r.delete("m2");
        assert_eq!(ids(&r), ["m1", "m3"]);
        r.restrict("carol", Some(Restriction::Banned));
        assert!(ids(&r).is_empty());
    }

    #[test]
    fn one_serialized_frame_is_shared_by_every_reader() {
        let r = room(ChatConfig::default());
        let mut a = r.subscribe();
        let mut b = r.subscribe();
        r.delete("x");
        let (fa, fb) = (a.try_recv().unwrap(), b.try_recv().unwrap());
        assert_eq!(fa.as_str(), r#"{"type":"delete","id":"x"}"#);
        // The same bytes, not a copy per reader.
        assert_eq!(fa.as_str().as_ptr(), fb.as_str().as_ptr());
    }
}
