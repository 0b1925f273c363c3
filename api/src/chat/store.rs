//! Chat in SurrealDB: messages (pruned after the retention), each channel's moderators,
//! restrictions (timeouts, bans) and settings. Record ids of per-user rows are
//! `<channel>_<user>`, so writes are idempotent upserts.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use surrealdb::types::SurrealValue;

use super::room::{Loaded, Restriction};
use super::{ChatMessage, Moderator, Settings};
use crate::error::Result;
use crate::ApiState;

/// The channel named `name`: its owner's (id, username).
pub async fn channel(st: &ApiState, name: &str) -> Result<Option<(String, String)>> {
    #[derive(Deserialize, SurrealValue)]
    struct Row {
        id: String,
        username: String,
    }
    let mut res = st
        .db
        .query("SELECT record::id(id) AS id, username FROM user WHERE username = $name LIMIT 1")
        .bind(("name", name.to_owned()))
        .await?;
    let row: Option<Row> = res.take(0)?;
    if let Some(r) = row {
        return Ok(Some((r.id, r.username)));
    }
    // A channel the operator configured by key (`streams::ensure_operator_streams`): its room
    // is keyed by its pseudo-owner, and nobody moderates it.
    let mut res = st
        .db
        .query("SELECT VALUE owner FROM stream WHERE name = $name AND string::starts_with(owner, $prefix) LIMIT 1")
        .bind(("name", name.to_owned()))
        .bind(("prefix", format!("{}:", crate::streams::OPERATOR_OWNER)))
        .await?;
    let owner: Option<String> = res.take(0)?;
    Ok(owner.map(|o| (o, name.to_owned())))
}

/// Everything a room starts from: its last `history` messages, moderators, restrictions still
/// in force, settings.
pub(crate) async fn load(st: &ApiState, channel: &str, history: usize) -> Result<Loaded> {
    #[derive(Deserialize, SurrealValue)]
    struct Restricted {
        user: String,
        until: Option<i64>,
    }
    let mut res = st
        .db
        .query(
            "SELECT * FROM (SELECT record::id(id) AS id, author_id, author, text, at FROM chat_message \
               WHERE channel = $channel AND deleted = false ORDER BY at DESC LIMIT $history) ORDER BY at ASC; \
             SELECT VALUE user FROM chat_moderator WHERE channel = $channel; \
             SELECT user, until FROM chat_restriction WHERE channel = $channel AND (until = NONE OR until > $now); \
             SELECT slow_mode_secs, followers_only FROM type::record('chat_settings', $channel)",
        )
        .bind(("channel", channel.to_owned()))
        .bind(("history", history as i64))
        .bind(("now", crate::db::now_ms()))
        .await?;
    let history: Vec<ChatMessage> = res.take(0)?;
    let moderators: Vec<String> = res.take(1)?;
    let restricted: Vec<Restricted> = res.take(2)?;
    let settings: Option<Settings> = res.take(3)?;
    Ok(Loaded {
        history,
        moderators: moderators.into_iter().collect::<HashSet<_>>(),
        restrictions: restricted
            .into_iter()
            .map(|r| {
                let restriction = match r.until {
                    Some(t) => Restriction::TimedOut(t),
                    None => Restriction::Banned,
                };
                (r.user, restriction)
            })
            .collect::<HashMap<_, _>>(),
        settings: settings.unwrap_or_default(),
    })
}

pub async fn save(st: &ApiState, channel: &str, m: &ChatMessage) -> Result<()> {
    st.db
        .query(
            "CREATE type::record('chat_message', $id) SET channel = $channel, author_id = $author_id, \
             author = $author, text = $text, at = $at, deleted = false",
        )
        .bind(("id", m.id.clone()))
        .bind(("channel", channel.to_owned()))
        .bind(("author_id", m.author_id.clone()))
        .bind(("author", m.author.clone()))
        .bind(("text", m.text.clone()))
        .bind(("at", m.at))
        .await?
        .check()?;
    Ok(())
}

/// Mark a message of `channel` deleted; false if there is no such message.
pub async fn delete(st: &ApiState, channel: &str, id: &str) -> Result<bool> {
    let mut res = st
        .db
        .query(
            "UPDATE type::record('chat_message', $id) SET deleted = true WHERE channel = $channel \
             RETURN VALUE record::id(id)",
        )
        .bind(("id", id.to_owned()))
        .bind(("channel", channel.to_owned()))
        .await?;
    let updated: Vec<String> = res.take(0)?;
    Ok(!updated.is_empty())
}

pub async fn restrict(
    st: &ApiState,
    channel: &str,
    user: &str,
    restriction: Option<Restriction>,
) -> Result<()> {
    let key = format!("{channel}_{user}");
    let q = match restriction {
        None => st
            .db
            .query("DELETE type::record('chat_restriction', $key)")
            .bind(("key", key)),
        // Their messages go too (clients drop them on the event; new readers never see them).
        Some(r) => st
            .db
            .query("UPSERT type::record('chat_restriction', $key) SET channel = $channel, user = $user, until = $until; \
                    UPDATE chat_message SET deleted = true WHERE channel = $channel AND author_id = $user")
            .bind(("key", key))
            .bind(("channel", channel.to_owned()))
            .bind(("user", user.to_owned()))
            .bind((
                "until",
                match r {
                    Restriction::TimedOut(t) => Some(t),
                    Restriction::Banned => None,
                },
            )),
    };
    q.await?.check()?;
    Ok(())
}

pub async fn save_settings(st: &ApiState, channel: &str, s: Settings) -> Result<()> {
    st.db
        .query("UPSERT type::record('chat_settings', $channel) SET slow_mode_secs = $slow, followers_only = $followers")
        .bind(("channel", channel.to_owned()))
        .bind(("slow", i64::from(s.slow_mode_secs)))
        .bind(("followers", s.followers_only))
        .await?
        .check()?;
    Ok(())
}

pub async fn set_moderator(st: &ApiState, channel: &str, user: &str, on: bool) -> Result<()> {
    let key = format!("{channel}_{user}");
    let q = if on {
        st.db
            .query(
                "UPSERT type::record('chat_moderator', $key) SET channel = $channel, user = $user",
            )
            .bind(("key", key))
            .bind(("channel", channel.to_owned()))
            .bind(("user", user.to_owned()))
    } else {
        st.db
            .query("DELETE type::record('chat_moderator', $key)")
            .bind(("key", key))
    };
    q.await?.check()?;
    Ok(())
}

pub async fn moderators(st: &ApiState, channel: &str) -> Result<Vec<Moderator>> {
    let mut res = st
        .db
        .query(
            "SELECT record::id(id) AS id, username FROM user WHERE record::id(id) IN \
             (SELECT VALUE user FROM chat_moderator WHERE channel = $channel) ORDER BY username",
        )
        .bind(("channel", channel.to_owned()))
        .await?;
    Ok(res.take(0)?)
}

/// Does `user` follow the channel whose owner is `channel`?
pub async fn follows(st: &ApiState, user: &str, channel: &str) -> Result<bool> {
    let mut res = st
        .db
        .query("SELECT VALUE record::id(id) FROM follow WHERE follower = $user AND channel = $channel LIMIT 1")
        .bind(("user", user.to_owned()))
        .bind(("channel", channel.to_owned()))
        .await?;
    let found: Vec<String> = res.take(0)?;
    Ok(!found.is_empty())
}

/// Delete messages older than `before` (Unix ms); how many (counted by id, not by reading
/// every message back).
pub async fn prune(st: &ApiState, before: i64) -> Result<usize> {
    let mut res = st
        .db
        .query("DELETE chat_message WHERE at < $cutoff RETURN VALUE record::id($before.id)")
        .bind(("cutoff", before))
        .await?;
    let gone: Vec<String> = res.take(0)?;
    Ok(gone.len())
}
