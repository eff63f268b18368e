//! Small file-system helpers shared by the FileStorage modules: error mapping, directory
//! fsync, atomic replacement of small files and clean-up of temp files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::StorageError;

/// Suffix of files being written; such files are never trusted and are deleted on open.
pub(super) const TMP_SUFFIX: &str = ".tmp";

/// Returns a mapper that wraps an [`io::Error`] with the operation and path it concerns,
/// so every `?` on a file-system call produces a [`StorageError::Io`] with context.
pub(super) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::io(op, path, source)
}

/// Makes the directory entries of `dir` (creations, renames, removals) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Replaces `dir/name` with `parts` concatenated, atomically: the bytes go to
/// `dir/name.tmp`, which is fsynced and renamed over `name`, then the directory is fsynced.
/// A crash leaves either the old or the new file, never a mix. With `sync == false`
/// (`SyncPolicy::UnsafeNoSync`) both fsyncs are skipped and only process crashes are safe.
pub(super) fn write_atomic(
    dir: &Path,
    name: &str,
    parts: &[&[u8]],
    sync: bool,
) -> Result<PathBuf, StorageError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    for part in parts {
        file.write_all(part).map_err(io_err("write", &tmp))?;
    }
    if sync {
        file.sync_all().map_err(io_err("fsync", &tmp))?;
    }
    drop(file);
    fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(path)
}

/// Regular files of `dir` as `(file name, path)`, sorted by name. Names that are not
/// UTF-8 cannot be ours and are skipped.
pub(super) fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        let kind = entry.file_type().map_err(io_err("stat", &entry.path()))?;
        if !kind.is_file() {
            continue;
        }
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Deletes the `*.tmp` leftovers of writes interrupted by a crash. They were never renamed
/// into place, so nothing depends on them. Returns whether anything was deleted.
pub(super) fn remove_tmp_files(dir: &Path) -> Result<bool, StorageError> {
    let mut removed = false;
    for (name, path) in list_files(dir)? {
        if name.ends_with(TMP_SUFFIX) {
            tracing::debug!(path = %path.display(), "removing leftover temp file");
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
            removed = true;
        }
    }
    Ok(removed)
}

/// Removes one file and, when `sync`, makes the removal durable before returning, so that a
/// sequence of removals becomes durable in the order it was made.
pub(super) fn remove_durably(dir: &Path, path: &Path, sync: bool) -> Result<(), StorageError> {
    fs::remove_file(path).map_err(io_err("remove", path))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}
