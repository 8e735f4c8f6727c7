//! Where original uploads are kept. One small trait, so an object store can follow the
//! local directory without touching its callers; keys are `<company>/<sha256 hex>`, so a
//! company's same file is stored once.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use crate::ids::CompanyId;

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

/// A store of original files.
pub trait FileStore: Send + Sync + 'static {
    /// A local directory for files being received, before [`FileStore::put_file`].
    fn staging_dir(&self) -> &Path;
    /// Takes the staged file at `path` and keeps it under `key` (replacing any file there).
    fn put_file<'a>(&'a self, key: &'a str, path: &'a Path) -> StoreFuture<'a, ()>;
    /// The whole file (CV files are small: the gateway caps them).
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<u8>>;
    /// Removes the file; a missing file is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;
}

/// The key of a company's file with this SHA-256.
pub fn key_for(company: CompanyId, sha256: &[u8; 32]) -> String {
    let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
    format!("{company}/{hex}")
}

/// Files under a local directory (shared by the gateway and cv-processor: one machine,
/// or a volume both mount).
pub struct LocalFileStore {
    root: PathBuf,
    staging: PathBuf,
}

impl LocalFileStore {
    /// Uses (and creates) `root`; uploads are staged in `root/.staging` so keeping one
    /// is a rename on the same file system.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        let staging = root.join(".staging");
        std::fs::create_dir_all(&staging)?;
        Ok(Self { root, staging })
    }

    fn path_of(&self, key: &str) -> io::Result<PathBuf> {
        let valid = !key.is_empty()
            && key.split('/').all(|part| {
                !part.is_empty() && part != "." && part != ".." && !part.starts_with('.') && !part.contains('\\')
            });
        if !valid {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid storage key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

impl FileStore for LocalFileStore {
    fn staging_dir(&self) -> &Path {
        &self.staging
    }

    fn put_file<'a>(&'a self, key: &'a str, path: &'a Path) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let target = self.path_of(key)?;
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::rename(path, &target).await
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<u8>> {
        Box::pin(async move { tokio::fs::read(self.path_of(key)?).await })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path_of(key)?).await {
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn files_are_kept_read_and_deleted_under_safe_keys_only() {
        let root = std::env::temp_dir().join(format!("hh-store-{}", uuid::Uuid::new_v4()));
        let store = LocalFileStore::open(&root).unwrap();
        let staged = store.staging_dir().join("upload-1");
        std::fs::write(&staged, b"%PDF-1.7 cv").unwrap();
        let key = key_for(CompanyId(7), &[0xab; 32]);
        assert!(key.starts_with("7/abab"));
        store.put_file(&key, &staged).await.unwrap();
        assert!(!staged.exists());
        assert_eq!(store.get(&key).await.unwrap(), b"%PDF-1.7 cv");
        store.delete(&key).await.unwrap();
        store.delete(&key).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap_err().kind(), io::ErrorKind::NotFound);
        for bad in ["", "../etc/passwd", "7/../../x", "/abs", "7/.staging", "7//x"] {
            assert_eq!(store.get(bad).await.unwrap_err().kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        std::fs::remove_dir_all(root).unwrap();
    }
}
