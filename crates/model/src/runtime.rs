//! Finding and loading ONNX Runtime's shared library (ort's `load-dynamic`).
//!
//! The library comes from the pinned PyPI `onnxruntime` wheel that `make setup` downloads,
//! verifies by sha256 and unpacks into `.cache/onnxruntime/` (scripts/setup-onnxruntime.sh).
//! Where to look, first match wins: the configured path, `ORT_DYLIB_PATH`, then the cache found by
//! walking up from the current directory and from the executable.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::ModelError;

/// The ONNX Runtime minor version this build is made for (ort 2.0.0-rc.15 speaks `api-31`).
pub const EXPECTED_MINOR: u32 = 31;
/// The file name `make setup` unpacks.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";
const CACHE_DIR: &str = ".cache/onnxruntime";
const WHAT_TO_DO: &str =
    "run `make setup` in the senti checkout (it downloads the pinned onnxruntime 1.31.1 wheel from PyPI), \
or set ORT_DYLIB_PATH or `model.onnxruntime` to a libonnxruntime.so of version 1.31";

/// The process's one ONNX Runtime environment (ort allows one) and where it was loaded from.
static INIT: OnceLock<Result<(PathBuf, Environment), String>> = OnceLock::new();

/// Loads ONNX Runtime once per process; later calls return the first result.
pub fn init(configured_opt: Option<&Path>) -> Result<PathBuf, ModelError> {
    INIT.get_or_init(|| load(configured_opt))
        .as_ref()
        .map(|(path, _)| path.clone())
        .map_err(|err| ModelError::Runtime(err.clone()))
}

/// The environment sessions are built in, loading ONNX Runtime from the default places if
/// [`init`] was not called first.
pub(crate) fn environment() -> Result<Environment, ModelError> {
    INIT.get_or_init(|| load(None)).as_ref().map(|(_, env)| env.clone()).map_err(|err| ModelError::Runtime(err.clone()))
}

fn load(configured_opt: Option<&Path>) -> Result<(PathBuf, Environment), String> {
    let path = locate(configured_opt).ok_or_else(|| format!("ONNX Runtime library not found; {WHAT_TO_DO}"))?;
    if !path.is_file() {
        return Err(format!("ONNX Runtime library {} does not exist; {WHAT_TO_DO}", path.display()));
    }
    check_version_in_name(&path)?;
    let builder = ort::init_from(&path)
        .map_err(|err| format!("cannot load ONNX Runtime from {}: {err}; {WHAT_TO_DO}", path.display()))?;
    let environment = builder
        .with_name("senti")
        .with_telemetry(false)
        .build()
        .map_err(|err| format!("cannot start ONNX Runtime from {}: {err}", path.display()))?;
    tracing::info!(path=%path.display(), "loaded onnx runtime");
    Ok((path, environment))
}

/// The library to load, if any candidate exists.
pub fn locate(configured_opt: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = configured_opt {
        return Some(path.to_owned());
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_owned)) {
        starts.push(dir);
    }
    starts
        .iter()
        .flat_map(|start| start.ancestors())
        .map(|dir| dir.join(CACHE_DIR).join(LIBRARY_FILE))
        .find(|candidate| candidate.is_file())
}

/// ort refuses older libraries itself but only logs newer ones; a file name that names another
/// minor version is refused here with advice, since a mismatched ABI can crash later.
fn check_version_in_name(path: &Path) -> Result<(), String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let Some(version) = name.strip_prefix("libonnxruntime.so.") else {
        return Ok(()); // e.g. a plain libonnxruntime.so symlink: ort checks the version it reports
    };
    let minor = version.split('.').nth(1).and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(EXPECTED_MINOR) => Ok(()),
        _ => Err(format!(
            "ONNX Runtime library {} is version {version}, but senti needs 1.{EXPECTED_MINOR}.x; {WHAT_TO_DO}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_version_in_file_name_is_refused_with_advice() {
        let err = check_version_in_name(Path::new("/x/libonnxruntime.so.1.19.2")).unwrap_err();
        assert!(err.contains("needs 1.31.x") && err.contains("make setup"), "{err}");
        assert!(check_version_in_name(Path::new("/x/libonnxruntime.so.1.31.1")).is_ok());
    }

    #[test]
    fn missing_library_says_what_to_do() {
        let err = load(Some(Path::new("/nonexistent/libonnxruntime.so.1.31.1"))).unwrap_err();
        assert!(err.contains("does not exist") && err.contains("make setup"), "{err}");
    }
}
