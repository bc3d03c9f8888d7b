//! What survives a restart (`--state-dir`): the ports that were added, as they were
//! asked for. Written atomically (temp file + rename) on every change; read once at
//! start, after which the daemon re-attaches the ports by itself.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use vswitch_proto::AddPortParams;

const FILE: &str = "ports.json";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct PortsFile {
    version: u32,
    ports: Vec<AddPortParams>,
}

pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// Opens (and creates, mode 0700) the state directory.
    pub fn open(dir: &Path) -> std::io::Result<StateStore> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(StateStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The saved ports. A missing file is an empty list; a corrupt one is moved
    /// aside (`ports.json.corrupt`) and reported, and the switch starts empty.
    pub fn load(&self) -> Result<Vec<AddPortParams>, String> {
        let path = self.path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        match serde_json::from_slice::<PortsFile>(&text) {
            Ok(f) if f.version == VERSION => Ok(f.ports),
            Ok(f) => Err(format!(
                "{}: unsupported version {}",
                path.display(),
                f.version
            )),
            Err(e) => {
                let aside = self.dir.join(format!("{FILE}.corrupt"));
                let _ = std::fs::rename(&path, &aside);
                Err(format!(
                    "{}: {e} (moved to {})",
                    path.display(),
                    aside.display()
                ))
            }
        }
    }

    pub fn save(&self, ports: &[AddPortParams]) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(&PortsFile {
            version: VERSION,
            ports: ports.to_vec(),
        })
        .map_err(std::io::Error::other)?;
        write_atomic(&self.dir, FILE, &body)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Writes `dir/file` so that a crash leaves either the old or the new content,
/// never a mix: a temp file, synced, renamed over the old one.
pub fn write_atomic(dir: &Path, file: &str, body: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{file}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch_proto::{PortKind, PortMode};

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vswitch-persist-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip_and_corruption() {
        let d = tmpdir("rt");
        let s = StateStore::open(&d).expect("open");
        assert!(s.load().expect("empty").is_empty());
        let ports = vec![
            AddPortParams {
                name: "a".into(),
                kind: PortKind::Pod,
                mode: PortMode::XdpSkb,
                pod: None,
            },
            AddPortParams {
                name: "b".into(),
                kind: PortKind::Uplink,
                mode: PortMode::Auto,
                pod: None,
            },
        ];
        s.save(&ports).expect("save");
        assert_eq!(s.load().expect("load"), ports);
        std::fs::write(d.join(FILE), b"{ not json").expect("write");
        let e = s.load().expect_err("corrupt");
        assert!(e.contains("corrupt"), "{e}");
        assert!(s.load().expect("moved aside").is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}
