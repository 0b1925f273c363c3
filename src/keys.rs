//! The embedded default's stream key: with none configured, stream `demo` gets a random key,
//! kept in `<data dir>/stream-keys.toml` (owner-only, 0600) so OBS settings survive restarts.
//! The key is logged once, when it is made; later starts log the file's path.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use rand::distr::{Alphanumeric, SampleString};
use tracing::{info, warn};

const FILE: &str = "stream-keys.toml";
const DEFAULT_STREAM: &str = "demo";

pub fn dev_keys(data_dir: &Path) -> anyhow::Result<HashMap<String, String>> {
    let path = data_dir.join(FILE);
    let keys: HashMap<String, String> = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let keys: HashMap<String, String> =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            if crate::secrets::restrict(&path)
                .with_context(|| format!("restricting {}", path.display()))?
            {
                warn!(file = %path.display(), "stream key file was readable by others; made it owner-only (0600)");
            }
            for stream in keys.keys() {
                info!(stream, file = %path.display(), "no stream keys configured; using the generated key in this file");
            }
            keys
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let key = Alphanumeric.sample_string(&mut rand::rng(), 24);
            let keys = HashMap::from([(DEFAULT_STREAM.to_string(), key)]);
            crate::secrets::write_private(&path, toml::to_string(&keys)?.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            // Shown this once, so a first run can be followed from the log alone.
            for (stream, key) in &keys {
                warn!(stream, key, file = %path.display(), "no stream keys configured; generated this key (shown once; set [stream_keys] in the config to choose your own)");
            }
            keys
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(keys)
}
