//! The data directory's lock file, which stops two processes (or two handles in one
//! process) from writing the same log.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::fsutil::io_err;
use crate::error::StorageError;

/// Name of the lock file inside the data directory.
pub(super) const LOCK_FILE: &str = "LOCK";

/// An exclusive `flock` on `<dir>/LOCK`, held for as long as this value lives.
///
/// `flock` locks belong to the open file description, so a second open of the same
/// directory conflicts even inside the same process, and the kernel releases the lock
/// when the process dies, so a crash never leaves a stale lock behind.
#[derive(Debug)]
pub(super) struct DirLock {
    /// Kept open: closing it releases the lock.
    _file: File,
}

impl DirLock {
    /// Takes the lock without waiting and records our pid in the file for diagnostics.
    /// Fails with [`StorageError::Locked`], naming the holder's pid when it is readable.
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, StorageError> {
        let path = dir.join(LOCK_FILE);
        // No truncate on open: while someone else holds the lock, its pid must stay readable.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    holder: read_holder(&file),
                    path,
                })
            }
            Err(TryLockError::Error(e)) => return Err(StorageError::io("lock", path, e)),
        }
        let pid = std::process::id().to_string();
        file.set_len(0).map_err(io_err("truncate", &path))?;
        file.write_all_at(pid.as_bytes(), 0)
            .map_err(io_err("write", &path))?;
        Ok(DirLock { _file: file })
    }
}

/// The pid written by the current holder, if the file holds one.
fn read_holder(mut file: &File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_naming_our_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(StorageError::Locked { path, holder }) => {
                assert_eq!(path, dir.path().join(LOCK_FILE));
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        let _again = DirLock::acquire(dir.path()).unwrap();
    }
}
