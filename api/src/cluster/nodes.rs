//! Who is in the cluster and what each node holds, in Redis, every entry under a lease
//! ([`super::LEASE`]) its node renews each [`super::HEARTBEAT`]: a node that dies (even by
//! `kill -9`) leaves the registry, the stream directory and the viewer counts within the lease.
//!
//! - registry: `nodes` (sorted set of ids) and `node:{id}` (its [`NodeInfo`], expiring);
//! - stream directory: `stream:{name}` → the id of the node that ingests it (one publisher per
//!   stream cluster-wide: the claim is taken before a publisher is accepted);
//! - viewers: `viewers:{stream}` → per node, its count and when that count expires.
//!
//! A node alone answers from itself: it owns every stream it is asked to, its counts are the
//! totals, and it is the only node.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use super::{Cluster, Error, LEASE};

/// What a node tells the others about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// Where clients reach it (`GLINT_ADVERTISE_URL`).
    pub url: String,
    /// `ingest`, `webrtc`, `hls`, `api`.
    pub roles: Vec<String>,
    pub load: Load,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub webrtc_viewers: usize,
    pub egress_mbps: f64,
    /// Share of one core used by the process since the last heartbeat (1.0 = one core).
    pub cpu: f64,
    pub ladders: usize,
    pub live_streams: usize,
}

/// Whether a node may take a stream's publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node holds the stream (it did already, or does now).
    Ours,
    /// Another node ingests it.
    Elsewhere(String),
}

/// `KEYS[1]` stream key; `ARGV` = node id, lease ms. Takes the stream if free (or ours already),
/// else answers the holder.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ''
end
return cur
";

/// Renew (`ARGV[2]` = lease ms) or, with `ARGV[2]` = 0, drop the claims among `KEYS` this node
/// (`ARGV[1]`) holds; how many it holds. Renewing also takes a stream back whose claim is gone
/// (a Redis that restarted empty, a lease that ran out while Redis was away); one another node
/// took meanwhile stays that node's.
const RENEW: &str = r"
local held = 0
for _, k in ipairs(KEYS) do
  local cur = redis.call('GET', k)
  if cur == ARGV[1] then
    held = held + 1
    if ARGV[2] == '0' then redis.call('DEL', k) else redis.call('PEXPIRE', k, ARGV[2]) end
  elseif (not cur) and ARGV[2] ~= '0' then
    held = held + 1
    redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
  end
end
return held
";

/// `KEYS` = viewer hashes; `ARGV` = node id, lease ms, then two counts (WebRTC, HLS) per key.
/// Each pair is stored as `webrtc hls expiry` (the server time it expires at).
const REPORT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
for i, k in ipairs(KEYS) do
  local w = tonumber(ARGV[2 * i + 1])
  local h = tonumber(ARGV[2 * i + 2])
  if w + h > 0 then
    redis.call('HSET', k, ARGV[1], string.format('%d %d %d', w, h, now + lease))
    redis.call('PEXPIRE', k, lease * 2)
  else
    redis.call('HDEL', k, ARGV[1])
  end
end
return #KEYS
";

/// `KEYS` = viewer hashes; per key, the sums of the WebRTC and HLS counts not yet expired
/// (expired ones go), flattened: `w1, h1, w2, h2, ...`.
const TOTALS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, k in ipairs(KEYS) do
  local w, h = 0, 0
  local fields = redis.call('HGETALL', k)
  for j = 1, #fields, 2 do
    local a, b, exp = string.match(fields[j + 1], '(%d+) (%d+) (%d+)')
    if exp and tonumber(exp) > now then
      w = w + tonumber(a)
      h = h + tonumber(b)
    else
      redis.call('HDEL', k, fields[j])
    end
  end
  out[2 * i - 1] = w
  out[2 * i] = h
end
return out
";

/// A stream's viewers: over WebRTC and over HLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Viewers {
    pub webrtc: usize,
    pub hls: usize,
}

impl Viewers {
    pub fn total(self) -> usize {
        self.webrtc + self.hls
    }
}

static CLAIM_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CLAIM));
static RENEW_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RENEW));
static REPORT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REPORT));
static TOTALS_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(TOTALS));

fn lease_ms() -> u64 {
    LEASE.as_millis() as u64
}

impl Cluster {
    /// Renew this node's registry entry (and say how it is doing).
    pub async fn heartbeat(&self, info: &NodeInfo) -> Result<(), Error> {
        let link = self.link().ok_or(Error::Alone)?;
        let json = serde_json::to_string(info).unwrap_or_default();
        let (node_key, nodes) = (link.key(&format!("node:{}", info.id)), link.key("nodes"));
        let id = info.id.clone();
        link.run(|mut c| async move {
            redis::pipe()
                .cmd("SET")
                .arg(node_key)
                .arg(json)
                .arg("PX")
                .arg(lease_ms())
                .ignore()
                .cmd("SADD")
                .arg(nodes)
                .arg(id)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// The nodes whose leases are current (this one included, once it has sent a heartbeat).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, Error> {
        let Some(link) = self.link() else {
            return Ok(Vec::new());
        };
        let set = link.key("nodes");
        let ids: Vec<String> = {
            let set = set.clone();
            link.run(|mut c| async move {
                redis::cmd("SMEMBERS")
                    .arg(set)
                    .query_async::<Vec<String>>(&mut c)
                    .await
            })
            .await?
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| link.key(&format!("node:{id}")))
            .collect();
        let found: Vec<Option<String>> = link
            .run(|mut c| async move {
                redis::cmd("MGET")
                    .arg(keys)
                    .query_async::<Vec<Option<String>>>(&mut c)
                    .await
            })
            .await?;
        let (mut alive, mut gone) = (Vec::new(), Vec::new());
        for (id, json) in ids.into_iter().zip(found) {
            match json.and_then(|j| serde_json::from_str::<NodeInfo>(&j).ok()) {
                Some(info) => alive.push(info),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            // Leases that ran out: their nodes leave the set.
            let _ = link
                .run(|mut c| async move {
                    redis::cmd("SREM")
                        .arg(set)
                        .arg(gone)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await;
        }
        alive.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(alive)
    }

    /// This node stops (cleanly): it leaves the registry at once.
    pub async fn leave(&self) -> Result<(), Error> {
        let Some(link) = self.link() else {
            return Ok(());
        };
        let id = self.node_id().to_owned();
        let (node_key, nodes) = (link.key(&format!("node:{id}")), link.key("nodes"));
        link.run(|mut c| async move {
            redis::pipe()
                .cmd("DEL")
                .arg(node_key)
                .ignore()
                .cmd("SREM")
                .arg(nodes)
                .arg(id)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Take `stream` for this node's publisher, unless another node ingests it.
    pub async fn claim_stream(&self, stream: &str) -> Result<Claim, Error> {
        let Some(link) = self.link() else {
            return Ok(Claim::Ours);
        };
        let key = link.key(&format!("stream:{stream}"));
        let me = self.node_id().to_owned();
        let holder: String = link
            .run(|mut c| async move {
                CLAIM_SCRIPT
                    .key(key)
                    .arg(me)
                    .arg(lease_ms())
                    .invoke_async::<String>(&mut c)
                    .await
            })
            .await?;
        Ok(if holder.is_empty() {
            Claim::Ours
        } else {
            Claim::Elsewhere(holder)
        })
    }

    /// Renew this node's claims on `streams` (those it still ingests); how many it held.
    pub async fn renew_streams(&self, streams: &[String]) -> Result<usize, Error> {
        self.renew_or_drop(streams, lease_ms()).await
    }

    /// Give up this node's claim on `stream` (its publisher left).
    pub async fn release_stream(&self, stream: &str) -> Result<(), Error> {
        self.renew_or_drop(&[stream.to_owned()], 0)
            .await
            .map(|_| ())
    }

    async fn renew_or_drop(&self, streams: &[String], lease: u64) -> Result<usize, Error> {
        let Some(link) = self.link() else {
            return Ok(streams.len());
        };
        if streams.is_empty() {
            return Ok(0);
        }
        let keys = link.keys("stream:", streams);
        let me = self.node_id().to_owned();
        link.run(|mut c| async move {
            let mut inv = RENEW_SCRIPT.prepare_invoke();
            for k in keys {
                inv.key(k);
            }
            inv.arg(me).arg(lease).invoke_async::<usize>(&mut c).await
        })
        .await
    }

    /// Which node ingests each of `streams` (`None`: none does, or its lease ran out).
    pub async fn stream_owners(&self, streams: &[String]) -> Result<Vec<Option<String>>, Error> {
        let Some(link) = self.link() else {
            return Ok(vec![None; streams.len()]);
        };
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let keys = link.keys("stream:", streams);
        link.run(|mut c| async move {
            redis::cmd("MGET")
                .arg(keys)
                .query_async::<Vec<Option<String>>>(&mut c)
                .await
        })
        .await
    }

    /// This node's viewers of each stream (zeros: none any more).
    pub async fn report_viewers(&self, counts: &[(String, Viewers)]) -> Result<(), Error> {
        let Some(link) = self.link() else {
            return Ok(());
        };
        if counts.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = counts
            .iter()
            .map(|(s, _)| link.key(&format!("viewers:{s}")))
            .collect();
        let values: Vec<usize> = counts.iter().flat_map(|(_, v)| [v.webrtc, v.hls]).collect();
        let me = self.node_id().to_owned();
        link.run(|mut c| async move {
            let mut inv = REPORT_SCRIPT.prepare_invoke();
            for k in keys {
                inv.key(k);
            }
            inv.arg(me).arg(lease_ms());
            for v in values {
                inv.arg(v);
            }
            inv.invoke_async::<usize>(&mut c).await
        })
        .await
        .map(|_| ())
    }

    /// Every node's viewers of each of `streams`, summed; a node alone answers `None` (its own
    /// counts are the totals).
    pub async fn total_viewers(&self, streams: &[String]) -> Result<Option<Vec<Viewers>>, Error> {
        let Some(link) = self.link() else {
            return Ok(None);
        };
        if streams.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let keys = link.keys("viewers:", streams);
        link.run(|mut c| async move {
            let mut inv = TOTALS_SCRIPT.prepare_invoke();
            for k in keys {
                inv.key(k);
            }
            inv.invoke_async::<Vec<usize>>(&mut c).await
        })
        .await
        .map(|flat| {
            Some(
                flat.chunks(2)
                    .map(|p| Viewers {
                        webrtc: p[0],
                        hls: p.get(1).copied().unwrap_or(0),
                    })
                    .collect(),
            )
        })
    }
}
