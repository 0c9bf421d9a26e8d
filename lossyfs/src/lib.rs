//! lossyfs: a FUSE pass-through file system for tests that can lose power.
//!
//! Everything written through the mount reaches a backing directory at once,
//! so programs see an ordinary file system. What makes it lossy is the undo
//! record it keeps on the side: for every file, the contents of each page
//! (4 KiB) that changed since the file's last `fsync`/`fdatasync`, and the
//! file's length at that sync; for every directory, the entries created,
//! removed or renamed since the directory's last `fsync`. A power cut
//! ([`Control::cut`]) applies that record backwards, leaving the backing
//! directory as a disk would hold it after losing its volatile state:
//!
//! - [`CutMode::Drop`]: every unsynced page, length change and directory
//!   entry is lost;
//! - [`CutMode::Torn`]: each unsynced page survives or not at random (from a
//!   seed, so a failure can be replayed), the file's length is the synced or
//!   the latest one at random, and pages that did not survive read as their
//!   synced contents (or zeros past the synced length). Directory entries
//!   since the directory's last fsync are still lost.
//!
//! This is the model of LazyFS (used by Jepsen): only what an fsync covered
//! is durable, and writes in flight may persist in part and in any order.
//! A program that relies on `sync_file_range`, `msync`-less mmap writes, or
//! the kernel eventually writing back its page cache loses data here, as it
//! would on a power cut: none of those reach a FUSE file system as a sync.
//!
//! While mounted, the backing directory holds the latest data, not the
//! disk's state: only after a cut is it what survived. lossyfs never syncs
//! the backing directory itself (the host's durability is not the point).
//! Requests are served one at a time; [`Control::set_sync_latency`] makes
//! syncs slow, so that more cuts land on writes in flight, and a sync in
//! flight when the power goes fails and covers nothing.
//!
//! # What it does not model
//! - Drives that acknowledge a flush and lose it anyway (lying write caches),
//!   and sector-level tearing inside a page (the unit here is a 4 KiB page).
//! - Metadata other than length and directory entries: a mode change passes
//!   through and always survives; owner and time changes are accepted and
//!   ignored; extended attributes, `fallocate` and file locks through the
//!   file system are not supported (flock works, kept by the kernel).
//! - Hard links, symbolic links, special files, `O_APPEND`, and mmap (files
//!   are opened with `direct_io`, so there is no kernel page cache to keep).
//! - Ordering between directory entries of different directories: each
//!   directory's entries are undone unless that directory was fsynced, even
//!   where a journaling file system would have committed them together.
//!
//! # Faults
//! Besides power cuts, [`Control`] injects the I/O errors a failing disk
//! gives: `EIO` from fsync/fdatasync ([`Control::fail_syncs`]) and `ENOSPC`
//! from writes ([`Control::set_disk_full`]). A failed fsync behaves as on
//! Linux: the kernel marks the file's dirty pages clean without writing
//! them, so a later fsync "succeeds" and still a cut loses them (unless
//! they were written again, and synced, after the failure). A program that
//! retries the fsync and trusts it loses data here, as it would there.
//!
//! # Control
//! In process, through a [`Control`] handle; from outside, through the
//! `lossyfs` binary's control socket, which takes the text commands of
//! [`Control::command`], one per line, and answers each with one line.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ffi::{OsStr, OsString},
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, UNIX_EPOCH},
};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyWrite, Request, TimeOrNow,
};

/// The unit of loss: a torn write keeps or loses whole pages.
pub const PAGE: u64 = 4096;

/// Where unlinked files wait, inside the backing directory, until their
/// directory's fsync makes the unlink durable (a cut puts them back). The
/// mount never shows it.
const TRASH: &str = ".lossyfs-trash";

/// No caching in the kernel: after a cut, nothing the kernel remembers may
/// contradict the backing directory.
const TTL: Duration = Duration::ZERO;

/// How a power cut treats data written since the last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Nothing unsynced survives.
    Drop,
    /// A random (seeded) subset of unsynced pages survives.
    Torn { seed: u64 },
}

/// What a cut lost, for the harness's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files that had unsynced changes.
    pub files: usize,
    /// Unsynced pages that did not survive.
    pub pages_lost: usize,
    /// Unsynced pages that survived (torn mode only).
    pub pages_kept: usize,
    /// Directory changes (create, unlink, rename) undone.
    pub entries_undone: usize,
}

/// A cheap-to-clone handle on a mounted lossyfs: power cuts and faults.
#[derive(Clone)]
pub struct Control {
    state: Arc<Mutex<State>>,
}

/// A mounted lossyfs; unmounts when dropped.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    control: Control,
    mountpoint: PathBuf,
}

/// Whether this machine can mount a lossyfs: `/dev/fuse`, `fusermount3`
/// (from Debian's `fuse3`) on the PATH, and a trial mount that works (a
/// container may have the device but not the right to mount). The answer
/// is worked out once per process.
///
/// # Errors
/// What is missing, in words.
pub fn fuse_available() -> Result<(), String> {
    static AVAILABLE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    AVAILABLE.get_or_init(check_fuse).clone()
}

fn check_fuse() -> Result<(), String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist (no FUSE in this kernel or container)".into());
    }
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("fusermount3").is_file())
    });
    if !on_path {
        return Err("fusermount3 is not on the PATH (Debian package fuse3)".into());
    }
    let trial = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
    let (backing, mnt) = (trial.path().join("backing"), trial.path().join("mnt"));
    std::fs::create_dir(&backing)
        .and_then(|()| std::fs::create_dir(&mnt))
        .map_err(|e| format!("no temporary directory: {e}"))?;
    let mounted = mount(&backing, &mnt).map_err(|e| format!("a trial FUSE mount failed: {e}"))?;
    let works = std::fs::write(mnt.join("probe"), b"probe")
        .map_err(|e| format!("a trial FUSE mount does not take writes: {e}"));
    let _ = mounted.unmount();
    works
}

/// Mounts a lossyfs at `mountpoint` over `backing` (both existing
/// directories). Needs `/dev/fuse` and `fusermount3` on the PATH; no libfuse.
///
/// Everything in `backing` when it mounts counts as durable.
///
/// # Errors
/// If `backing` cannot be read or the mount fails.
pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<Mounted> {
    let backing = backing.canonicalize()?;
    std::fs::create_dir_all(backing.join(TRASH))?;
    let state = Arc::new(Mutex::new(State::new(backing.clone())?));
    let fs = LossyFs {
        state: Arc::clone(&state),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("lossyfs:{}", backing.display())),
        fuser::MountOption::Subtype("lossyfs".into()),
    ];
    let session = fuser::spawn_mount(fs, mountpoint, &config)?;
    tracing::info!(backing = %backing.display(), mountpoint = %mountpoint.display(), "lossyfs mounted");
    Ok(Mounted {
        session: Some(session),
        control: Control { state },
        mountpoint: mountpoint.to_owned(),
    })
}

impl Mounted {
    /// The handle for cuts and faults.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Unmounts and waits for the file system thread to end. If that fails
    /// (for example while a process still uses the mount), detaches the
    /// mount lazily (`fusermount3 -uz`), so that no stale mount is left
    /// behind, and says so.
    ///
    /// # Errors
    /// If the unmount failed (the mount was then detached lazily).
    pub fn unmount(mut self) -> io::Result<()> {
        let session = self.session.take().expect("mounted");
        if let Err(e) = session.umount_and_join() {
            lazy_unmount(&self.mountpoint);
            return Err(e);
        }
        tracing::info!(mountpoint = %self.mountpoint.display(), "lossyfs unmounted");
        Ok(())
    }
}

impl Mounted {
    /// Waits until the file system is unmounted from outside
    /// (`fusermount3 -u`).
    ///
    /// # Errors
    /// The session's error, if it ended with one.
    pub fn wait(mut self) -> io::Result<()> {
        let session = self.session.take().expect("mounted");
        session.join()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            if let Err(e) = session.umount_and_join() {
                tracing::warn!(error = %e, mountpoint = %self.mountpoint.display(), "lossyfs unmount failed");
                lazy_unmount(&self.mountpoint);
            }
        }
    }
}

/// Detaches a mount that a process still holds (`fusermount3 -uz`): it goes
/// away once the last user lets go, instead of staying as a stale mount.
fn lazy_unmount(mountpoint: &Path) {
    let detached = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(mountpoint)
        .status();
    tracing::warn!(mountpoint = %mountpoint.display(), ?detached, "lossyfs detached lazily");
}

impl Control {
    /// Cuts the power: applies the undo record to the backing directory as
    /// `mode` says, and fails every later change and sync with `EIO` (the
    /// machine is off; a sync in flight fails too). Kill the programs using
    /// the mount, then unmount and mount again to power back on.
    ///
    /// # Errors
    /// If the backing directory cannot be restored (then it is in an
    /// unknown state).
    pub fn cut(&self, mode: CutMode) -> io::Result<CutReport> {
        let mut state = self.lock();
        state.powered_off = true;
        let report = state.cut(mode)?;
        tracing::info!(?mode, ?report, "power cut");
        Ok(report)
    }

    /// The next `count` fsyncs and fdatasyncs (of files and directories)
    /// fail with `EIO`; `u64::MAX` means until cleared, 0 clears.
    pub fn fail_syncs(&self, count: u64) {
        self.lock().failing_syncs = count;
        tracing::info!(count, "fsync fault set");
    }

    /// While set, every write (and every size increase) fails with `ENOSPC`.
    pub fn set_disk_full(&self, full: bool) {
        self.lock().disk_full = full;
        tracing::info!(full, "disk-full fault set");
    }

    /// Every fsync and fdatasync takes this long before it counts (the
    /// file system serves nothing else meanwhile, like a busy disk). The
    /// longer a sync takes, the likelier a cut finds writes in flight: the
    /// case a torn cut is for.
    pub fn set_sync_latency(&self, latency: Duration) {
        self.lock().sync_latency = latency;
        tracing::info!(?latency, "sync latency set");
    }

    /// How many fsyncs and fdatasyncs have succeeded since the mount.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Runs one text command of the control protocol and returns its
    /// one-line answer:
    ///
    /// | command | effect |
    /// | --- | --- |
    /// | `cut drop` | [`Control::cut`] with [`CutMode::Drop`] |
    /// | `cut torn SEED` | [`Control::cut`] with [`CutMode::Torn`] |
    /// | `fail-sync N`, `fail-sync on`, `fail-sync off` | [`Control::fail_syncs`] |
    /// | `enospc on`, `enospc off` | [`Control::set_disk_full`] |
    /// | `sync-latency MS` | [`Control::set_sync_latency`] |
    /// | `status` | the number of successful syncs |
    ///
    /// # Errors
    /// An unknown command, or a failed cut, as a message.
    pub fn command(&self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["cut", "drop"] => self.cut_answer(CutMode::Drop),
            ["cut", "torn", seed] => {
                let seed = seed.parse().map_err(|e| format!("seed {seed:?}: {e}"))?;
                self.cut_answer(CutMode::Torn { seed })
            }
            ["fail-sync", "on"] => {
                self.fail_syncs(u64::MAX);
                Ok("ok".into())
            }
            ["fail-sync", "off"] => {
                self.fail_syncs(0);
                Ok("ok".into())
            }
            ["fail-sync", n] => {
                let n = n.parse().map_err(|e| format!("count {n:?}: {e}"))?;
                self.fail_syncs(n);
                Ok("ok".into())
            }
            ["enospc", on @ ("on" | "off")] => {
                self.set_disk_full(*on == "on");
                Ok("ok".into())
            }
            ["sync-latency", ms] => {
                let ms = ms
                    .parse()
                    .map_err(|e| format!("milliseconds {ms:?}: {e}"))?;
                self.set_sync_latency(Duration::from_millis(ms));
                Ok("ok".into())
            }
            ["status"] => Ok(format!("ok syncs={}", self.syncs())),
            _ => Err(format!("unknown command {line:?}")),
        }
    }

    fn cut_answer(&self, mode: CutMode) -> Result<String, String> {
        let r = self.cut(mode).map_err(|e| e.to_string())?;
        Ok(format!(
            "ok files={} pages_lost={} pages_kept={} entries_undone={}",
            r.files, r.pages_lost, r.pages_kept, r.entries_undone
        ))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The file system proper: every request locks [`State`].
struct LossyFs {
    state: Arc<Mutex<State>>,
}

/// The undo record of one file since its last sync.
struct FileUndo {
    /// The backing file, open for writing, so a cut can restore it whatever
    /// it is called by then.
    file: Arc<File>,
    /// The length at the last sync.
    synced_len: u64,
    /// The synced contents of each changed page below `synced_len`.
    old: BTreeMap<u64, Vec<u8>>,
    /// Every page changed since the sync, above `synced_len` too.
    dirty: BTreeSet<u64>,
    /// Pages whose writes a failed sync lost, with what the disk holds for
    /// them (zeros past what is given). As Linux does, the failed sync
    /// leaves them clean: a later sync "succeeds" without writing them,
    /// and a cut brings back the disk's contents, unless the page was
    /// written again after the failure and that write was synced.
    poisoned: BTreeMap<u64, Vec<u8>>,
}

/// A directory change not yet covered by an fsync of the directories it
/// touched.
struct DirOp {
    /// The backing inode numbers of the directories whose fsync it waits for.
    pending: BTreeSet<u64>,
    undo: Undo,
}

enum Undo {
    /// Remove `parent/name` (a file or directory created since).
    Created { parent: u64, name: OsString },
    /// Move the trashed entry back to `parent/name`.
    Removed {
        parent: u64,
        name: OsString,
        trashed: OsString,
    },
    /// Move `to` back to `from`, and the trashed entry it replaced to `to`.
    Renamed {
        from: (u64, OsString),
        to: (u64, OsString),
        replaced: Option<OsString>,
    },
}

struct State {
    backing: PathBuf,
    /// FUSE inode -> path relative to `backing` (as last seen).
    paths: HashMap<u64, PathBuf>,
    /// Backing inode number -> FUSE inode, so that renames keep identities.
    inodes: HashMap<u64, u64>,
    next_inode: u64,
    handles: HashMap<u64, Arc<File>>,
    next_handle: u64,
    /// By backing inode number.
    files: BTreeMap<u64, FileUndo>,
    dir_ops: Vec<DirOp>,
    next_trash: u64,
    powered_off: bool,
    failing_syncs: u64,
    disk_full: bool,
    syncs: u64,
    sync_latency: Duration,
}

fn errno(e: &io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_i32)
}

impl State {
    fn new(backing: PathBuf) -> io::Result<State> {
        let root_ino = std::fs::metadata(&backing)?.ino();
        Ok(State {
            backing,
            paths: HashMap::from([(INodeNo::ROOT.0, PathBuf::new())]),
            inodes: HashMap::from([(root_ino, INodeNo::ROOT.0)]),
            next_inode: 2,
            handles: HashMap::new(),
            next_handle: 1,
            files: BTreeMap::new(),
            dir_ops: Vec::new(),
            next_trash: 0,
            powered_off: false,
            failing_syncs: 0,
            disk_full: false,
            syncs: 0,
            sync_latency: Duration::ZERO,
        })
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.paths
            .get(&ino.0)
            .map(|p| self.backing.join(p))
            .ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        if parent == INodeNo::ROOT && name == TRASH {
            return Err(Errno::ENOENT);
        }
        Ok(self.path(parent)?.join(name))
    }

    /// The backing inode number of a directory the mount knows.
    fn dir_key(&self, ino: INodeNo) -> Result<u64, Errno> {
        Ok(std::fs::metadata(self.path(ino)?)
            .map_err(|e| errno(&e))?
            .ino())
    }

    /// The attributes of `path`, registering it under a FUSE inode.
    fn attr(&mut self, path: &Path) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| errno(&e))?;
        let ino = match self.inodes.get(&meta.ino()) {
            Some(ino) => *ino,
            None => {
                let ino = self.next_inode;
                self.next_inode += 1;
                self.inodes.insert(meta.ino(), ino);
                ino
            }
        };
        if let Ok(relative) = path.strip_prefix(&self.backing) {
            self.paths.insert(ino, relative.to_owned());
        }
        let time = |secs: i64, nsecs: i64| {
            UNIX_EPOCH + Duration::new(secs.max(0) as u64, nsecs.clamp(0, 999_999_999) as u32)
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size: meta.len(),
            blocks: meta.blocks(),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    fn check_on(&self) -> Result<(), Errno> {
        if self.powered_off {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }

    /// The undo record of `file`, started now if it has none: what the
    /// file holds now is what its last sync left.
    fn undo_of(&mut self, file: &Arc<File>) -> Result<&mut FileUndo, Errno> {
        let meta = file.metadata().map_err(|e| errno(&e))?;
        Ok(self.files.entry(meta.ino()).or_insert_with(|| FileUndo {
            file: Arc::clone(file),
            synced_len: meta.len(),
            old: BTreeMap::new(),
            dirty: BTreeSet::new(),
            poisoned: BTreeMap::new(),
        }))
    }

    /// Records the synced contents of the pages in `start..end` before
    /// they change.
    fn before_change(&mut self, file: &Arc<File>, start: u64, end: u64) -> Result<(), Errno> {
        if end <= start {
            return Ok(());
        }
        let undo = self.undo_of(file)?;
        for page in start / PAGE..=(end - 1) / PAGE {
            undo.dirty.insert(page);
            // A page a failed sync lost: the disk still holds the older data.
            if let Some(durable) = undo.poisoned.remove(&page) {
                undo.old.entry(page).or_insert(durable);
                continue;
            }
            let at = page * PAGE;
            if at >= undo.synced_len || undo.old.contains_key(&page) {
                continue;
            }
            let mut old = vec![0; PAGE.min(undo.synced_len - at) as usize];
            undo.file
                .read_exact_at(&mut old, at)
                .map_err(|e| errno(&e))?;
            undo.old.insert(page, old);
        }
        Ok(())
    }

    fn set_len(&mut self, file: &Arc<File>, len: u64) -> Result<(), Errno> {
        let current = file.metadata().map_err(|e| errno(&e))?.len();
        if len > current && self.disk_full {
            return Err(Errno::ENOSPC);
        }
        self.before_change(file, len.min(current), len.max(current))?;
        file.set_len(len).map_err(|e| errno(&e))
    }

    /// A sync of the file with backing inode `key` failed: its unsynced
    /// pages are lost (see [`FileUndo::poisoned`]); its length is taken as
    /// reached (the worse case: the lost pages read as zeros or old data).
    fn poison(&mut self, key: u64) {
        let Some(undo) = self.files.get_mut(&key) else {
            return;
        };
        for page in std::mem::take(&mut undo.dirty) {
            let durable = undo.old.remove(&page).unwrap_or_default();
            undo.poisoned.entry(page).or_insert(durable);
        }
        undo.old.clear();
        if let Ok(meta) = undo.file.metadata() {
            undo.synced_len = meta.len();
        }
    }

    /// A sync of the file with backing inode `key` succeeded: what it
    /// changed is durable, except pages a failed sync lost before.
    fn synced(&mut self, key: u64) {
        let Some(undo) = self.files.get_mut(&key) else {
            return;
        };
        if undo.poisoned.is_empty() {
            self.files.remove(&key);
            return;
        }
        undo.dirty.clear();
        undo.old.clear();
        if let Ok(meta) = undo.file.metadata() {
            undo.synced_len = meta.len();
        }
    }

    fn sync(&mut self) -> Result<(), Errno> {
        self.check_on()?;
        if self.failing_syncs > 0 {
            if self.failing_syncs != u64::MAX {
                self.failing_syncs -= 1;
            }
            tracing::debug!("failing a sync with EIO (injected)");
            return Err(Errno::EIO);
        }
        self.syncs += 1;
        Ok(())
    }

    /// Moves `path` into the trash and returns its name there.
    fn trash(&mut self, path: &Path) -> Result<OsString, Errno> {
        let name = OsString::from(format!("{}", self.next_trash));
        self.next_trash += 1;
        std::fs::rename(path, self.backing.join(TRASH).join(&name)).map_err(|e| errno(&e))?;
        Ok(name)
    }

    fn record(&mut self, dirs: impl IntoIterator<Item = u64>, undo: Undo) {
        self.dir_ops.push(DirOp {
            pending: dirs.into_iter().collect(),
            undo,
        });
    }

    /// An fsync of the directory `dir` (backing inode): its entries are durable.
    fn dir_synced(&mut self, dir: u64) {
        let (durable, pending): (Vec<DirOp>, Vec<DirOp>) = std::mem::take(&mut self.dir_ops)
            .into_iter()
            .map(|mut op| {
                op.pending.remove(&dir);
                op
            })
            .partition(|op| op.pending.is_empty());
        self.dir_ops = pending;
        // What a durable unlink or replacing rename removed is gone for good.
        for op in durable {
            let trashed = match op.undo {
                Undo::Removed { trashed, .. } => Some(trashed),
                Undo::Renamed { replaced, .. } => replaced,
                Undo::Created { .. } => None,
            };
            if let Some(trashed) = trashed {
                let path = self.backing.join(TRASH).join(trashed);
                let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
            }
        }
    }

    /// The backing path of the directory with backing inode `dir`, wherever
    /// it is now.
    fn dir_path(&self, dir: u64) -> Option<PathBuf> {
        let ino = self.inodes.get(&dir)?;
        let path = self.backing.join(self.paths.get(ino)?);
        (std::fs::metadata(&path).ok()?.ino() == dir).then_some(path)
    }

    fn cut(&mut self, mode: CutMode) -> io::Result<CutReport> {
        let mut rng = match mode {
            CutMode::Drop => None,
            CutMode::Torn { seed } => Some(fastrand::Rng::with_seed(seed)),
        };
        let mut report = CutReport::default();
        for (_, undo) in std::mem::take(&mut self.files) {
            report.files += 1;
            let current = undo.file.metadata()?.len();
            let len = if rng.as_mut().is_some_and(|rng| rng.bool()) {
                current
            } else {
                undo.synced_len
            };
            undo.file.set_len(len)?;
            for page in undo.dirty {
                let at = page * PAGE;
                if at >= len {
                    report.pages_lost += 1;
                    continue;
                }
                if rng.as_mut().is_some_and(|rng| rng.bool()) {
                    report.pages_kept += 1;
                    continue;
                }
                report.pages_lost += 1;
                let end = (at + PAGE).min(len);
                let mut synced = undo.old.get(&page).cloned().unwrap_or_default();
                synced.resize((end - at) as usize, 0);
                undo.file.write_all_at(&synced, at)?;
            }
            // Lost to a failed sync: never on the disk, whatever the mode.
            for (page, mut durable) in undo.poisoned {
                let at = page * PAGE;
                if at >= len {
                    continue;
                }
                report.pages_lost += 1;
                durable.resize(((at + PAGE).min(len) - at) as usize, 0);
                undo.file.write_all_at(&durable, at)?;
            }
        }
        for op in std::mem::take(&mut self.dir_ops).into_iter().rev() {
            report.entries_undone += 1;
            self.undo(op.undo)?;
        }
        self.handles.clear();
        Ok(report)
    }

    fn undo(&self, undo: Undo) -> io::Result<()> {
        let trash = self.backing.join(TRASH);
        let at = |(dir, name): &(u64, OsString)| self.dir_path(*dir).map(|d| d.join(name));
        match undo {
            Undo::Created { parent, name } => {
                if let Some(path) = at(&(parent, name)) {
                    match std::fs::symlink_metadata(&path) {
                        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path)?,
                        Ok(_) => std::fs::remove_file(&path)?,
                        Err(_) => {}
                    }
                }
            }
            Undo::Removed {
                parent,
                name,
                trashed,
            } => {
                if let Some(path) = at(&(parent, name)) {
                    std::fs::rename(trash.join(trashed), path)?;
                }
            }
            Undo::Renamed { from, to, replaced } => {
                if let (Some(from), Some(to)) = (at(&from), at(&to)) {
                    if to.exists() {
                        std::fs::rename(&to, from)?;
                    }
                    if let Some(replaced) = replaced {
                        std::fs::rename(trash.join(replaced), to)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        self.handles.get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn open_handle(&mut self, file: Arc<File>) -> FileHandle {
        let fh = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(fh, file);
        FileHandle(fh)
    }
}

/// Opens the backing file for reading and writing whatever the caller's
/// access mode (the kernel enforces that on its side), without `O_APPEND`
/// (offsets come from the kernel).
fn open_backing(path: &Path, flags: i32) -> io::Result<File> {
    let passed = flags & (libc::O_SYNC | libc::O_DSYNC | libc::O_NOFOLLOW);
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(passed)
        .open(path)
}

impl LossyFs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits as long as a sync takes on this disk ([`Control::set_sync_latency`]),
    /// without holding the state: a cut may come meanwhile, and then the
    /// sync fails and covers nothing.
    fn sync_latency(&self) {
        let latency = self.lock().sync_latency;
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
    }

    /// unlink and rmdir: the entry moves to the trash until its directory's
    /// fsync, so that a cut can put it back.
    fn remove(&self, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let result = (|| {
            s.check_on()?;
            let path = s.child(parent, name)?;
            let dir = s.dir_key(parent)?;
            let meta = std::fs::symlink_metadata(&path).map_err(|e| errno(&e))?;
            if meta.is_dir()
                && std::fs::read_dir(&path)
                    .map_err(|e| errno(&e))?
                    .next()
                    .is_some()
            {
                return Err(Errno::ENOTEMPTY);
            }
            let trashed = s.trash(&path)?;
            s.record(
                [dir],
                Undo::Removed {
                    parent: dir,
                    name: name.to_owned(),
                    trashed,
                },
            );
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl fuser::Filesystem for LossyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.lock();
        match s.child(parent, name).and_then(|p| s.attr(&p)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut s = self.lock();
        match s.path(ino).and_then(|p| s.attr(&p)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.lock();
        let result = (|| {
            let path = s.path(ino)?;
            if let Some(mode) = mode {
                s.check_on()?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| errno(&e))?;
            }
            if let Some(size) = size {
                s.check_on()?;
                let file = match fh.map(|fh| s.handle(fh)) {
                    Some(Ok(file)) => file,
                    _ => Arc::new(open_backing(&path, 0).map_err(|e| errno(&e))?),
                };
                s.set_len(&file, size)?;
            }
            s.attr(&path)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.lock();
        let result = (|| {
            s.check_on()?;
            let path = s.child(parent, name)?;
            let dir = s.dir_key(parent)?;
            std::fs::create_dir(&path).map_err(|e| errno(&e))?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode(mode & !umask & 0o7777),
            );
            s.record(
                [dir],
                Undo::Created {
                    parent: dir,
                    name: name.to_owned(),
                },
            );
            s.attr(&path)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let result = (|| {
            s.check_on()?;
            if flags != RenameFlags::empty() {
                return Err(Errno::EINVAL);
            }
            let from = s.child(parent, name)?;
            let to = s.child(newparent, newname)?;
            let (from_dir, to_dir) = (s.dir_key(parent)?, s.dir_key(newparent)?);
            std::fs::symlink_metadata(&from).map_err(|e| errno(&e))?;
            if from == to {
                return Ok(());
            }
            let replaced = match std::fs::symlink_metadata(&to) {
                Ok(m)
                    if m.is_dir()
                        && std::fs::read_dir(&to)
                            .map_err(|e| errno(&e))?
                            .next()
                            .is_some() =>
                {
                    return Err(Errno::ENOTEMPTY);
                }
                Ok(_) => Some(s.trash(&to)?),
                Err(_) => None,
            };
            if let Err(e) = std::fs::rename(&from, &to) {
                if let Some(trashed) = &replaced {
                    // Put the target back: the rename did not happen.
                    let _ = std::fs::rename(s.backing.join(TRASH).join(trashed), &to);
                }
                return Err(errno(&e));
            }
            s.record(
                [from_dir, to_dir],
                Undo::Renamed {
                    from: (from_dir, name.to_owned()),
                    to: (to_dir, newname.to_owned()),
                    replaced,
                },
            );
            // Keep the paths of the renamed node (and a directory's children) current.
            let old = from
                .strip_prefix(&s.backing)
                .map_err(|_| Errno::EINVAL)?
                .to_owned();
            let new = to
                .strip_prefix(&s.backing)
                .map_err(|_| Errno::EINVAL)?
                .to_owned();
            for path in s.paths.values_mut() {
                if let Ok(rest) = path.strip_prefix(&old) {
                    *path = new.join(rest);
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.lock();
        let result = (|| {
            let path = s.path(ino)?;
            let file = Arc::new(open_backing(&path, flags.0).map_err(|e| errno(&e))?);
            if flags.0 & libc::O_TRUNC != 0 {
                s.check_on()?;
                s.set_len(&file, 0)?;
            }
            Ok(s.open_handle(file))
        })();
        match result {
            Ok(fh) => reply.opened(fh, FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.lock();
        let result = (|| {
            s.check_on()?;
            let path = s.child(parent, name)?;
            let dir = s.dir_key(parent)?;
            let existed = std::fs::symlink_metadata(&path).is_ok();
            if existed && flags & libc::O_EXCL != 0 {
                return Err(Errno::EEXIST);
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(mode & !umask & 0o7777)
                .open(&path)
                .map_err(|e| errno(&e))?;
            let file = Arc::new(file);
            if existed && flags & libc::O_TRUNC != 0 {
                s.set_len(&file, 0)?;
            }
            if !existed {
                s.record(
                    [dir],
                    Undo::Created {
                        parent: dir,
                        name: name.to_owned(),
                    },
                );
            }
            let attr = s.attr(&path)?;
            Ok((attr, s.open_handle(file)))
        })();
        match result {
            Ok((attr, fh)) => {
                reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::FOPEN_DIRECT_IO)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let file = match self.lock().handle(fh) {
            Ok(file) => file,
            Err(e) => return reply.error(e),
        };
        let mut buf = vec![0; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..filled]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.lock();
        let result = (|| {
            s.check_on()?;
            if s.disk_full {
                return Err(Errno::ENOSPC);
            }
            let file = s.handle(fh)?;
            s.before_change(&file, offset, offset + data.len() as u64)?;
            file.write_all_at(data, offset).map_err(|e| errno(&e))?;
            Ok(data.len() as u32)
        })();
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): not a sync.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync_latency();
        let mut s = self.lock();
        let result = (|| {
            let file = s.handle(fh)?;
            let key = file.metadata().map_err(|e| errno(&e))?.ino();
            match s.sync() {
                Ok(()) => s.synced(key),
                Err(e) => {
                    s.poison(key);
                    return Err(e);
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = self.lock();
        let result = (|| {
            let path = s.path(ino)?;
            let mut entries = vec![
                (ino, FileType::Directory, OsString::from(".")),
                (ino, FileType::Directory, OsString::from("..")),
            ];
            let mut names: Vec<OsString> = std::fs::read_dir(&path)
                .map_err(|e| errno(&e))?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .filter(|n| !(ino == INodeNo::ROOT && n == TRASH))
                .collect();
            names.sort();
            for name in names {
                if let Ok(attr) = s.attr(&path.join(&name)) {
                    entries.push((attr.ino, attr.kind, name));
                }
            }
            Ok(entries)
        })();
        match result {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(ino, i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync_latency();
        let mut s = self.lock();
        let result = (|| {
            s.sync()?;
            let dir = s.dir_key(ino)?;
            s.dir_synced(dir);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
