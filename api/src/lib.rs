//! Glint's platform API (users, stream keys, streams, follows, notifications, chat, categories
//! on SurrealDB). Empty until issue #3: today stream keys come from configuration
//! (`signaling::StaticKeys`) and live streams are listed by the binary at `/api/live`.
