//! A consistent copy of a SQLite store taken while cutover writes to it:
//! the evidence of why a team cut over, kept after the test.
//!
//! Must never: overwrite a file, or leave a half-written copy under the
//! name asked for.

use std::path::{Path, PathBuf};

use super::{Engine, Store, StoreError};

impl Store {
    /// Copies the store into `out` with `VACUUM INTO`, which reads one
    /// snapshot (writers go on meanwhile) and writes a compact database.
    /// The copy is written beside `out` under a `.partial` name and linked
    /// into place once whole and synced, so `out` is a complete store or
    /// absent. Returns the copy's size in bytes.
    pub async fn backup_into(&self, out: &Path) -> Result<u64, StoreError> {
        if self.engine != Engine::Sqlite {
            return Err(StoreError::BackupNeedsSqlite);
        }
        let partial = partial_name(out);
        for path in [out, partial.as_path()] {
            if path.exists() {
                return Err(StoreError::BackupExists {
                    path: path.display().to_string(),
                });
            }
        }
        let file_error = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::BackupFile { path, source }
        };
        let target = partial.to_str().ok_or_else(|| StoreError::BackupFile {
            path: partial.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path is not UTF-8"),
        })?;
        if let Err(err) = sqlx::query("VACUUM INTO $1").bind(target).execute(&self.pool).await {
            let _ = std::fs::remove_file(&partial);
            return Err(err.into());
        }
        std::fs::File::open(&partial)
            .and_then(|file| file.sync_all())
            .map_err(file_error(&partial))?;
        // A link, not a rename: it fails where `out` appeared meanwhile.
        let linked = std::fs::hard_link(&partial, out);
        let _ = std::fs::remove_file(&partial);
        linked.map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => StoreError::BackupExists {
                path: out.display().to_string(),
            },
            _ => file_error(out)(source),
        })?;
        let size = std::fs::metadata(out).map_err(file_error(out))?.len();
        Ok(size)
    }
}

fn partial_name(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}
