//! The client's files: per server, the last user who logged in; per user and
//! server, the identity seed and the peer session keys. Directories are mode
//! 0700, files 0600, written atomically (temp file, then rename). Secrets
//! are never printed.
//!
//! ```text
//! <config>/<host>_<port>/last_user
//! <config>/<host>_<port>/users/<name>/identity.json   {"username","seed"}
//! <config>/<host>_<port>/users/<name>/peers.json      peer session keys
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::exit::{CliResult, Failure};
use crate::client::{Identity, SavedPeers, WsUrl};
use crate::crypto::{b64_decode, b64_encode};

/// The config directory: `--config-dir`/`CHAT_CLIENT_DIR`, else
/// `$XDG_CONFIG_HOME/chat_client`, else `~/.config/chat_client`.
pub fn config_dir(explicit: Option<PathBuf>) -> CliResult<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir);
    }
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(xdg) = non_empty("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(xdg).join("chat_client"));
    }
    match non_empty("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".config").join("chat_client")),
        None => Err(Failure::usage(
            "no HOME nor XDG_CONFIG_HOME: pass --config-dir DIR",
        )),
    }
}

/// A name made safe as one path component: lower case, and anything but
/// ASCII letters, digits, `-` and `_` written as `%XX`.
pub fn file_name(name: &str) -> String {
    let mut out = String::new();
    for byte in name.to_lowercase().bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

fn file_error(action: &str, path: &Path, e: std::io::Error) -> Failure {
    Failure::failed(format!("cannot {action} {}: {e}", path.display()))
}

fn private_dir(path: &Path) -> CliResult<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| file_error("create", path, e))
}

/// Writes `bytes` to `path` (mode 0600) through a temp file and a rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> CliResult<()> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| file_error("write", path, e))
}

/// Reads `path`; `None` if it does not exist.
fn read_optional(path: &Path) -> CliResult<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_error("read", path, e)),
    }
}

/// The files of one server.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
}

impl Files {
    /// The directory of the server at `url` under the config directory.
    pub fn open(config: &Path, url: &str) -> CliResult<Files> {
        let parsed = WsUrl::parse(url).map_err(|e| Failure::usage(e.to_string()))?;
        let dir = config.join(file_name(&format!("{}_{}", parsed.host, parsed.port)));
        Ok(Files { dir })
    }

    /// The user who last logged in to this server from here.
    pub fn last_user(&self) -> CliResult<Option<String>> {
        let text = read_optional(&self.dir.join("last_user"))?;
        Ok(text.map(|t| t.trim_end_matches('\n').to_string()))
    }

    /// Remembers `name` as the last user.
    pub fn set_last_user(&self, name: &str) -> CliResult<()> {
        private_dir(&self.dir)?;
        write_private(&self.dir.join("last_user"), format!("{name}\n").as_bytes())
    }

    /// The files of user `name`.
    pub fn user(&self, name: &str) -> UserFiles {
        UserFiles {
            dir: self.dir.join("users").join(file_name(name)),
        }
    }
}

/// The files of one user on one server.
#[derive(Debug, Clone)]
pub struct UserFiles {
    dir: PathBuf,
}

impl UserFiles {
    fn identity_path(&self) -> PathBuf {
        self.dir.join("identity.json")
    }

    fn peers_path(&self) -> PathBuf {
        self.dir.join("peers.json")
    }

    /// The saved identity and the name as typed when it was saved.
    pub fn load_identity(&self) -> CliResult<Option<(String, Identity)>> {
        let path = self.identity_path();
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        let bad = || Failure::failed(format!("{} is damaged", path.display()));
        let v: Value = serde_json::from_str(&text).map_err(|_| bad())?;
        let name = v.get("username").and_then(Value::as_str).ok_or_else(bad)?;
        let seed: [u8; 32] = v
            .get("seed")
            .and_then(Value::as_str)
            .and_then(|s| b64_decode(s).ok())
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?;
        Ok(Some((name.to_string(), Identity::from_seed(seed))))
    }

    /// Saves the identity seed of `name`.
    pub fn save_identity(&self, name: &str, identity: &Identity) -> CliResult<()> {
        private_dir(&self.dir)?;
        let text = json!({"username": name, "seed": b64_encode(&identity.seed())}).to_string();
        write_private(&self.identity_path(), text.as_bytes())
    }

    /// The saved peer sessions, if any.
    pub fn load_peers(&self) -> CliResult<Option<SavedPeers>> {
        Ok(read_optional(&self.peers_path())?.map(SavedPeers::from_text))
    }

    /// Saves the peer sessions.
    pub fn save_peers(&self, peers: &SavedPeers) -> CliResult<()> {
        private_dir(&self.dir)?;
        write_private(&self.peers_path(), peers.as_text().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chat_cli_{tag}_{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn names_become_safe_file_names() {
        assert_eq!(file_name("Alice"), "alice");
        assert_eq!(file_name("../x y"), "%2E%2E%2Fx%20y");
        assert_eq!(file_name("ünï"), "%C3%BCn%C3%AF");
        assert_eq!(file_name("127.0.0.1_12345"), "127%2E0%2E0%2E1_12345");
    }

    #[test]
    fn identity_and_last_user_round_trip_privately() {
        let dir = temp_dir("files");
        let files = Files::open(&dir, "ws://127.0.0.1:4000").unwrap();
        assert_eq!(files.last_user().unwrap(), None);
        let user = files.user("Alice");
        assert!(user.load_identity().unwrap().is_none());
        let id = Identity::generate();
        user.save_identity("Alice", &id).unwrap();
        files.set_last_user("Alice").unwrap();
        let (name, back) = files.user("alice").load_identity().unwrap().unwrap();
        assert_eq!((name.as_str(), back.seed()), ("Alice", id.seed()));
        assert_eq!(files.last_user().unwrap().as_deref(), Some("Alice"));
        let mode = fs::metadata(user.identity_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(&user.dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        fs::write(user.identity_path(), "{").unwrap();
        assert!(user.load_identity().is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
