//! The embedded default's stream key: with none configured, stream `demo` gets a random key,
//! kept in `<data dir>/stream-keys.toml` so OBS settings survive restarts.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use rand::distr::{Alphanumeric, SampleString};
use tracing::warn;

const FILE: &str = "stream-keys.toml";
const DEFAULT_STREAM: &str = "demo";

pub fn dev_keys(data_dir: &Path) -> anyhow::Result<HashMap<String, String>> {
    let path = data_dir.join(FILE);
    let keys: HashMap<String, String> = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let key = Alphanumeric.sample_string(&mut rand::rng(), 24);
            let keys = HashMap::from([(DEFAULT_STREAM.to_string(), key)]);
            std::fs::write(&path, toml::to_string(&keys)?)
                .with_context(|| format!("writing {}", path.display()))?;
            keys
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    for (stream, key) in &keys {
        warn!(stream, key, file = %path.display(), "no stream keys configured; using this generated key (set [stream_keys] in the config to choose your own)");
    }
    Ok(keys)
}
