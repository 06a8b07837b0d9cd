//! The gossip key file (`cluster.key_file`): where a node's [`Keyring`] comes from at start, and
//! what `senti cluster keygen` writes.
//!
//! ```text
//! # senti gossip keys: the first key seals, every key opens. Keep this file mode 600.
//! sgk1-3f09a1c2-9c1e...(64 hex)        primary: seals outgoing datagrams, opens incoming ones
//! sgk1-81d2e5f0-07aa...(64 hex)        others: only open incoming ones (rotation)
//! ```
//! Blank lines and lines starting with `#` are ignored. The file is refused when group or others
//! may read it (on Unix), so a key never sits world-readable by accident; it is read once at
//! start: a changed file takes effect at the node's next start (rotation is a rolling restart,
//! docs/security.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::keyring::{Key, KeyError, Keyring};

/// The comment at the top of a file `senti cluster keygen --out` creates.
const HEADER: &str =
    "# senti gossip keys (cluster.key_file): the first key seals, every key opens. Keep this file mode 600.\n";

/// Why a key file was refused or could not be written. Every message names the file and
/// `cluster.key_file`, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("gossip key file {path} (`cluster.key_file`): {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Group or others may read it.
    #[error(
        "gossip key file {path} (`cluster.key_file`) is readable by group or others (mode {mode:03o}): \
         run `chmod 600 {path}`"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line is not a good key.
    #[error("gossip key file {path} (`cluster.key_file`), line {line}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        source: KeyError,
    },
    /// No key line at all.
    #[error(
        "gossip key file {path} (`cluster.key_file`) holds no key: create it with \
         `senti cluster keygen --out {path}`"
    )]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The keys do not make a keyring (two with one id, too many).
    #[error("gossip key file {path} (`cluster.key_file`): {source}")]
    Ring {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: KeyError,
    },
    /// `keygen --out` onto an existing file.
    #[error("{path} exists: keygen never overwrites a key file (use `--add {path}` to add a key to it)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
}

/// Reads a key file: checks its permissions, then parses every key line (first = primary).
pub fn read_key_file(path: &Path) -> Result<Keyring, KeyFileError> {
    let io = |source| KeyFileError::Io { path: path.to_owned(), source };
    let metadata = std::fs::metadata(path).map_err(io)?;
    check_private(path, &metadata)?;
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse_key_lines(path, &text)
}

/// The keyring of a key file's text (`path` only names it in errors).
pub fn parse_key_lines(path: &Path, text: &str) -> Result<Keyring, KeyFileError> {
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key =
            Key::parse(line).map_err(|source| KeyFileError::Key { path: path.to_owned(), line: index + 1, source })?;
        keys.push(key);
    }
    let mut keys = keys.into_iter();
    let primary = keys.next().ok_or_else(|| KeyFileError::Empty { path: path.to_owned() })?;
    Keyring::from_keys(primary, keys.collect()).map_err(|source| KeyFileError::Ring { path: path.to_owned(), source })
}

/// `senti cluster keygen --out FILE`: creates `path` (mode 600, never over an existing file)
/// holding one new key, and returns it.
pub fn create_key_file(path: &Path) -> Result<Key, KeyFileError> {
    let key = Key::generate().map_err(|source| KeyFileError::Ring { path: path.to_owned(), source })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => KeyFileError::Exists { path: path.to_owned() },
        _ => KeyFileError::Io { path: path.to_owned(), source },
    })?;
    let text = format!("{HEADER}{}\n", key.to_text());
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyFileError::Io { path: path.to_owned(), source })?;
    Ok(key)
}

/// `senti cluster keygen --add FILE`: appends one new key to a valid key file (not primary: it
/// opens datagrams; move its line first to make it seal them), and returns it.
pub fn add_key_to_file(path: &Path) -> Result<Key, KeyFileError> {
    let keyring = read_key_file(path)?;
    let key = Key::generate().map_err(|source| KeyFileError::Ring { path: path.to_owned(), source })?;
    let others: Vec<Key> = keyring.ids().iter().skip(1).filter_map(|id| keyring.get(*id).cloned()).collect();
    // Refuses a full ring (or, improbably, a drawn id that is taken) before touching the file.
    Keyring::from_keys(keyring.primary().clone(), others.into_iter().chain([key.clone()]).collect())
        .map_err(|source| KeyFileError::Ring { path: path.to_owned(), source })?;
    let io = |source| KeyFileError::Io { path: path.to_owned(), source };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let separator = if text.is_empty() || text.ends_with('\n') { "" } else { "\n" };
    let mut file = std::fs::OpenOptions::new().append(true).open(path).map_err(io)?;
    file.write_all(format!("{separator}{}\n", key.to_text()).as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
    Ok(key)
}

fn check_private(path: &Path, metadata: &std::fs::Metadata) -> Result<(), KeyFileError> {
    match open_to_others(metadata) {
        Some(mode) => Err(KeyFileError::Permissions { path: path.to_owned(), mode }),
        None => Ok(()),
    }
}

/// The file's mode if group or others may read or write it (a secret must be mode 600 or
/// stricter); `None` when it is private, and always on systems without Unix modes.
pub(crate) fn open_to_others(metadata: &std::fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the target's temp dir for one test.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("senti-key-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn keygen_creates_a_private_file_and_never_overwrites() {
        let path = temp_dir("create").join("cluster.key");
        let key = create_key_file(&path).unwrap();
        let keyring = read_key_file(&path).unwrap();
        assert_eq!(keyring.ids(), vec![key.id()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let before = std::fs::read_to_string(&path).unwrap();
        let err = create_key_file(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    }

    #[test]
    fn keygen_add_appends_a_key_that_is_not_primary() {
        let path = temp_dir("add").join("cluster.key");
        let first = create_key_file(&path).unwrap();
        let second = add_key_to_file(&path).unwrap();
        let keyring = read_key_file(&path).unwrap();
        assert_eq!(keyring.ids(), vec![first.id(), second.id()]);
        assert_eq!(keyring.primary().id(), first.id());
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_dir("mode").join("cluster.key");
        create_key_file(&path).unwrap();
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_key_file(&path).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains("chmod 600") && err.contains("`cluster.key_file`"), "{err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        read_key_file(&path).unwrap();
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_and_the_first_key_is_primary() {
        let (a, b) = (Key::generate().unwrap(), Key::generate().unwrap());
        let text = format!("# keys\n\n  {}  \n# old key, remove after rotation\n{}\n\n", a.to_text(), b.to_text());
        let keyring = parse_key_lines(Path::new("k"), &text).unwrap();
        assert_eq!(keyring.ids(), vec![a.id(), b.id()]);
    }

    #[test]
    fn bad_files_are_refused_naming_file_and_line_never_the_secret() {
        let path = Path::new("/etc/senti/cluster.key");
        let err = parse_key_lines(path, "# nothing here\n\n").unwrap_err().to_string();
        assert!(err.contains("holds no key") && err.contains("/etc/senti/cluster.key"), "{err}");
        let weak = format!("sgk1-00000001-{}", "00".repeat(32));
        let err = parse_key_lines(path, &format!("# k\n{weak}\n")).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("weak") && err.contains("`cluster.key_file`"), "{err}");
        assert!(!err.contains(&"00".repeat(32)), "{err}");
        let err = parse_key_lines(path, "change-me\n").unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("sgk1-"), "{err}");
        let key = Key::generate().unwrap().to_text();
        let err = parse_key_lines(path, &format!("{key}\n{key}\n")).unwrap_err().to_string();
        assert!(err.contains("already holds"), "{err}");
        let missing = read_key_file(Path::new("/nonexistent/senti.key")).unwrap_err().to_string();
        assert!(missing.contains("/nonexistent/senti.key") && missing.contains("`cluster.key_file`"), "{missing}");
    }
}
