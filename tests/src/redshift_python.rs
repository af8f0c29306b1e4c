//! AWS's Python driver for Redshift (`redshift_connector`, from PyPI) for end-to-end tests:
//! a real Redshift driver, which speaks md5 and Redshift's SHA-256 digest (auth code 13)
//! but not PostgreSQL's SCRAM, and sends Redshift's startup parameters
//! (`client_protocol_version`, `driver_version`, ...).
//!
//! It is installed on first use into a virtual environment under the build's target
//! directory (PyPI is reachable from these machines; CI installs it the same way), pinned
//! to [`VERSION`]. Concurrent test binaries take a file lock around the install.

use std::path::{Path, PathBuf};
use std::process::Command;
use tokio::sync::OnceCell;

/// The pinned driver release.
pub const VERSION: &str = "2.2.0";

/// The interpreter of the environment that has the driver; installs it on first use.
pub async fn python() -> &'static Path {
    static PYTHON: OnceCell<PathBuf> = OnceCell::const_new();
    PYTHON
        .get_or_init(|| async {
            tokio::task::spawn_blocking(install)
                .await
                .expect("install task")
                .unwrap_or_else(|e| panic!("cannot install redshift_connector {VERSION}: {e}"))
        })
        .await
}

fn venv_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join(format!("test-python/redshift_connector-{VERSION}"))
}

fn install() -> Result<PathBuf, String> {
    let dir = venv_dir();
    let python = dir.join("bin/python");
    let done = dir.join(".installed");
    if done.exists() {
        return Ok(python);
    }
    std::fs::create_dir_all(dir.parent().expect("has a parent")).map_err(|e| e.to_string())?;
    let lock_path = dir.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| e.to_string())?;
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("lock {}: {e}", lock_path.display()))?;
    if done.exists() {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&dir);
    run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("redshift_connector=={VERSION}"),
    ]))?;
    std::fs::write(&done, VERSION).map_err(|e| e.to_string())?;
    Ok(python)
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
