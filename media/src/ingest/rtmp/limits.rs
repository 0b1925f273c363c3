//! What an RTMP connection may hold before its stream key is accepted: a connection slot (per
//! address and in total, [`crate::slots`]) and a deadline to reach an accepted `publish`. Message and buffer sizes
//! before and after are the chunk reader's ([`super::chunk::ChunkLimits`]).

use std::time::Duration;

/// Connections not yet publishing, in total.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Connections not yet publishing from one address (an IPv6 /64 counts as one address).
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 8;
/// Time from accept to an accepted `publish` (OBS and ffmpeg take well under a second).
pub const DEFAULT_PUBLISH_DEADLINE: Duration = Duration::from_secs(10);

/// The RTMP listener's settings for connections that have not published yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtmpLimits {
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub publish_deadline: Duration,
}

impl Default for RtmpLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            publish_deadline: DEFAULT_PUBLISH_DEADLINE,
        }
    }
}

impl RtmpLimits {
    /// Slots for connections that have not published yet.
    pub fn slots(&self) -> crate::slots::Slots {
        crate::slots::Slots::new(self.max_connections, self.max_connections_per_address)
    }
}
