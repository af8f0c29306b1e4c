//! Real client programs the tests run (psql, Java, Python with psycopg and pyodbc): where
//! they are, failing loudly with the install command when one is missing (CI installs them,
//! so a missing client is a broken machine, not a reason to skip), and the checked-in
//! client sources under `tests/clients/`.

use std::path::{Path, PathBuf};

/// One apt-get line installs every client of the matrix (see `docs/clients.md`).
pub const APT_INSTALL: &str = "apt-get install -y --no-install-recommends postgresql-client \
     libpostgresql-jdbc-java default-jdk-headless odbc-postgresql unixodbc python3-psycopg \
     python3-pyodbc";

/// `program` from `PATH`, or a panic naming the package to install.
pub fn require_program(program: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{program}` is required by the client matrix and not on PATH; install with: {APT_INSTALL}")
    })
}

/// A file the client matrix needs, or a panic naming the package to install.
pub fn require_file(path: &Path, what: &str) -> PathBuf {
    assert!(
        path.is_file(),
        "{what} ({}) is required by the client matrix and missing; install with: {APT_INSTALL}",
        path.display()
    );
    path.to_path_buf()
}

/// `$PGJDBC_JAR`, else Debian's `libpostgresql-jdbc-java` jar.
pub fn pgjdbc_jar() -> PathBuf {
    let jar = std::env::var_os("PGJDBC_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/java/postgresql.jar"));
    require_file(&jar, "the pgjdbc jar")
}

/// The Python that has the Debian `python3-psycopg` / `python3-pyodbc` modules:
/// `$CLIENT_MATRIX_PYTHON`, else the system `/usr/bin/python3` (a pyenv or venv `python3`
/// earlier on `PATH` would not see Debian's packages), else `python3` from `PATH`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CLIENT_MATRIX_PYTHON") {
        return PathBuf::from(p);
    }
    let system = Path::new("/usr/bin/python3");
    if system.is_file() {
        return system.to_path_buf();
    }
    require_program("python3")
}

/// A checked-in client script or program under `tests/clients/`.
pub fn client_source(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(relative)
}

/// Compiles the checked-in Java source `relative` (with `classpath`) into a temporary
/// directory, which is returned.
pub async fn javac(relative: &str, classpath: &[&Path]) -> tempfile::TempDir {
    let javac = require_program("javac");
    let classes = tempfile::tempdir().expect("temp dir");
    let mut command = tokio::process::Command::new(&javac);
    command.arg("-d").arg(classes.path());
    if !classpath.is_empty() {
        command
            .arg("-cp")
            .arg(std::env::join_paths(classpath).expect("class path"));
    }
    let compiled = command
        .arg(client_source(relative))
        .output()
        .await
        .expect("run javac");
    assert!(
        compiled.status.success(),
        "javac failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    classes
}

/// Removes the developer's `PG*` variables from a libpq-based client's environment (as
/// `Psql` does) so only what the test passes is used, and turns off `.pgpass` lookups.
pub fn isolate_libpq_env(command: &mut tokio::process::Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(key);
        }
    }
    command
        .env("PGPASSFILE", "/dev/null")
        .env("PGSERVICEFILE", "/dev/null");
}
