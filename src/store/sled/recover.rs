//! Recovery after a failed commit: release the poisoned database, write its
//! files back so the disk holds what the page cache does, probe the disk.

use std::{
    fs::File,
    path::Path,
    sync::{atomic::Ordering, Arc, PoisonError},
    time::Duration,
};

use super::{
    commit::{injected_fault, is_set},
    Inner, SledStore, StoreOptions,
};
use crate::error::Error;

impl SledStore {
    /// Brings writes back after a failed commit, if the disk takes writes
    /// again: probes it with a small fsynced file, and only if that works,
    /// closes the poisoned database (waiting for running exports first),
    /// writes every data file back and syncs it (so the disk holds what the
    /// page cache does, see [`rewrite_and_sync`]), and reopens the database,
    /// replaying sled's log. Requests answer [`Error::Reopening`] meanwhile.
    /// Blocking. Writes that failed may or may not survive; acknowledged
    /// ones do.
    ///
    /// Succeeds at once when there is nothing to recover.
    ///
    /// # Errors
    /// If the probe, the release of the old database or the reopen fails;
    /// the store then stays as it was (or, if the reopen failed, keeps
    /// answering [`Error::Reopening`]) and a later call tries again.
    pub(super) fn recover_blocking(&self) -> Result<(), Error> {
        let _one = self
            .shared
            .maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let (healthy, scanning) = self.open_db().map_or((false, false), |inner| {
            (
                inner.syncer.poison().is_none(),
                inner.scans.load(Ordering::SeqCst) > 0,
            )
        });
        if healthy {
            return Ok(());
        }
        if scanning {
            return Err(Error::Storage(
                "an export is reading the failed database; waiting for it to end".into(),
            ));
        }
        probe_disk(&self.shared.options)
            .map_err(|e| Error::Storage(format!("the disk does not take writes yet: {e}")))?;
        let old = self
            .shared
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(old) = old {
            // Its waiting writers fail; its commit thread ends; its
            // watchers are told to resume on the reopened store.
            let _ = old.commit.stop();
            old.log.close();
            if let Err(old) = release(old) {
                *self
                    .shared
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(old);
                return Err(Error::Storage(
                    "requests still hold the failed database; will retry".into(),
                ));
            }
        }
        // After a failed fdatasync the page cache may hold pages the kernel
        // marked clean without writing them: the reopened sled would read
        // them (they are in memory), append after them, and later syncs
        // would never write them. Writing every byte back and syncing makes
        // the disk hold what sled is about to read.
        rewrite_and_sync(&self.shared.options.data_dir).map_err(|e| {
            Error::Storage(format!(
                "cannot rewrite the data files after the failure: {e}"
            ))
        })?;
        let inner = Inner::open(&self.shared.options, &self.shared.syncs)?;
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(inner));
        tracing::info!(
            data_dir = %self.shared.options.data_dir.display(),
            "store reopened after a failed commit: writes resume"
        );
        Ok(())
    }
}

/// How long [`SledStore::recover_blocking`] waits for in-flight requests to let go of the
/// poisoned database before giving up until the next attempt.
pub(super) const RELEASE_PATIENCE: Duration = Duration::from_secs(1);

/// Drops `inner` once this is its last reference (in-flight requests finish
/// quickly), so sled lets go of the directory; gives it back if requests
/// still hold it after [`RELEASE_PATIENCE`].
pub(super) fn release(mut inner: Arc<Inner>) -> Result<(), Arc<Inner>> {
    let started = std::time::Instant::now();
    loop {
        // Watches hold the change log (and through it the database) until
        // they notice it closed, which they do at once.
        if Arc::strong_count(&inner.log) == 1 {
            match Arc::try_unwrap(inner) {
                Ok(inner) => {
                    // sled's log flushes and fsyncs on drop, and unwraps the
                    // result: a disk that still fails must not take the
                    // recovery thread down with it.
                    let dropped =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(inner)));
                    if dropped.is_err() {
                        tracing::warn!(
                            "closing the failed database panicked inside sled; reopening anyway"
                        );
                    }
                    return Ok(());
                }
                Err(still_shared) => inner = still_shared,
            }
        }
        if started.elapsed() >= RELEASE_PATIENCE {
            return Err(inner);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads every regular file under `dir` and writes it back in place, then
/// fdatasyncs each file and fsyncs each directory: afterwards the disk holds
/// exactly what the page cache does. Used by [`SledStore::recover_blocking`] only, after
/// the database is closed; it costs one read and one write of the store.
pub(super) fn rewrite_and_sync(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            rewrite_and_sync(&entry.path())?;
        } else if kind.is_file() {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(entry.path())?;
            let mut buf = vec![0; 1 << 20];
            let mut offset = 0;
            loop {
                let n = file.read_at(&mut buf, offset)?;
                if n == 0 {
                    break;
                }
                file.write_all_at(&buf[..n], offset)?;
                offset += n as u64;
            }
            file.sync_data()?;
        }
    }
    sync_dir(dir)
}

/// Whether the data directory's disk takes a durable write again: writes,
/// fsyncs and removes a small file beside sled's. (Honours
/// [`StoreOptions::fail_commits`], which stands for a full disk.)
pub(super) fn probe_disk(options: &StoreOptions) -> std::io::Result<()> {
    if is_set(options.fail_commits.as_ref()) {
        return Err(injected_fault());
    }
    let path = options.data_dir.join(".settingsd-probe");
    let result = (|| {
        use std::io::Write;
        let mut file = File::create(&path)?;
        file.write_all(&[0; 4096])?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// sled's configuration file: written (never fsynced) when sled creates a
/// database, read at every open.
const SLED_CONF_FILE: &str = "conf";

/// Makes durable what sled writes without syncing, before any write is
/// acknowledged: its configuration file, and the directory entries of its
/// files (the per-commit fdatasync covers only the data file's contents).
pub(super) fn sync_sled_files(dir: &Path) -> std::io::Result<()> {
    File::open(dir.join(SLED_CONF_FILE))?.sync_all()?;
    sync_dir(dir)
}

/// Removes sled's configuration file if it holds only zero bytes: what a
/// power cut during the first open can leave (the length reached the disk,
/// the data did not: XFS does this, and a torn lossyfs cut found it). sled
/// refuses to open such a database; without the file, it writes it anew,
/// with the parameters settingsd always uses (sled's defaults). Any other
/// content is left for sled to judge.
pub(super) fn repair_zeroed_conf(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(SLED_CONF_FILE);
    match std::fs::read(&path) {
        Ok(bytes) if !bytes.is_empty() && bytes.iter().all(|b| *b == 0) => {
            tracing::warn!(path = %path.display(), "sled's configuration file is all zeros (a power cut during the first open): rewriting it");
            std::fs::remove_file(&path)
        }
        _ => Ok(()),
    }
}

/// Creates `dir` (and missing parents) if it does not exist, durably: the
/// new entries are in their parents, which an fsync of `dir` itself does
/// not cover, so a power cut after the first start would otherwise lose the
/// whole store (a power-loss test on lossyfs found it; see issue 14). The
/// directory's own entry is synced in its parent at every open too: it may
/// have been made by someone else (an operator's `mkdir`, a container
/// volume) or by a run that died before syncing it.
pub(super) fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    // A relative path's first component lives in the current directory.
    let parent_of = |p: &Path| match p.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Some(Path::new(".").to_owned()),
        parent => parent.map(Path::to_owned),
    };
    let mut missing = Vec::new();
    let mut at = dir.to_owned();
    while !at.exists() {
        missing.push(at.clone());
        match parent_of(&at) {
            Some(parent) => at = parent,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    if missing.is_empty() {
        missing.push(dir.to_owned());
    }
    for entry in missing {
        if let Some(parent) = parent_of(&entry) {
            sync_dir(&parent)?;
        }
    }
    Ok(())
}
