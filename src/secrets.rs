//! The access-token signing secret: `GLINT_JWT_SECRET` if set, else 32 random bytes kept in
//! `<data dir>/jwt-secret` (created on first start, mode 0600) so sessions survive restarts.

use std::path::Path;

use anyhow::Context;

const FILE: &str = "jwt-secret";
const LEN: usize = 32;

pub fn jwt_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Ok(s) = std::env::var("GLINT_JWT_SECRET") {
        anyhow::ensure!(
            s.len() >= LEN,
            "GLINT_JWT_SECRET must be at least {LEN} bytes"
        );
        return Ok(s.into_bytes());
    }
    let path = data_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() >= LEN => Ok(bytes),
        Ok(_) => anyhow::bail!("{} is shorter than {LEN} bytes", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let secret: [u8; LEN] = rand::random();
            write_private(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
            Ok(secret.to_vec())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)
}
