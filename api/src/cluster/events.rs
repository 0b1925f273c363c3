//! What one node tells every node (the bus carries these), and how a node applies one it
//! receives. A node alone applies its own at once; in a cluster it applies them when they come
//! back from Redis, so every node sees one room's events in the same order.

use serde::{Deserialize, Serialize};

use crate::chat::room::Restriction;
use crate::chat::{ChatMessage, Settings};
use crate::notifications::Notification;
use crate::ApiState;

/// A change to one chat room (the state every node's copy of the room keeps, and what its
/// readers are sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum RoomEvent {
    Message(ChatMessage),
    Delete {
        id: String,
    },
    Restrict {
        user_id: String,
        restriction: Option<Restriction>,
    },
    Settings(Settings),
    Moderator {
        user_id: String,
        on: bool,
    },
    Viewers {
        count: usize,
    },
}

/// Everything that crosses nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Event {
    /// A room (by channel id) changed.
    Chat { room: String, event: RoomEvent },
    /// Go-live notifications, stored already, for the users' open notification streams.
    Notify { notifications: Vec<Notification> },
    /// A stream was created, edited, went live or offline: cached directory pages are stale.
    DirectoryChanged,
    /// The user logged out (or a refresh token was reused): their open streams end.
    EndStreams { user: String },
    /// The stream's key was rotated: whichever node has its publisher ends it.
    EndPublisher { stream: String },
}

/// A node's copy of the cluster's state takes in `event`.
pub(crate) async fn apply(st: &ApiState, event: Event) {
    match event {
        Event::Chat { room, event } => {
            if let Some(room) = st.chat.get(&room) {
                room.apply(event);
            }
        }
        Event::Notify { notifications } => {
            for n in notifications {
                let _ = st.notify.send(n);
            }
        }
        Event::DirectoryChanged => st.directory.invalidate(),
        Event::EndStreams { user } => {
            st.realtime.end_streams_of(&user);
        }
        Event::EndPublisher { stream } => {
            // Off the bus's task: ending a publisher waits on the media core.
            let publishers = st.publishers.clone();
            let ended = tokio::spawn(async move { publishers.end_publisher(&stream).await });
            if !st.cluster.is_clustered() {
                let _ = ended.await; // alone: the caller (a key rotation) waits for it
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_tagged_json() {
        let e = Event::Chat {
            room: "u1".into(),
            event: RoomEvent::Restrict {
                user_id: "u2".into(),
                restriction: Some(Restriction::TimedOut(42)),
            },
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"t":"chat","room":"u1","event":{"t":"restrict","user_id":"u2","restriction":{"timed_out":42}}}"#
        );
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        let json = r#"{"t":"end_publisher","stream":"alice"}"#;
        let e: Event = serde_json::from_str(json).unwrap();
        assert!(matches!(e, Event::EndPublisher { stream } if stream == "alice"));
    }
}
