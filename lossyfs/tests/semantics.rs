//! lossyfs keeps what an fsync covered and loses the rest on a cut: checked
//! through a real mount. Skipped, loudly, where FUSE is missing (unless
//! SETTINGSD_REQUIRE_FUSE=1, as in CI, which makes that a failure).

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::FileExt,
    path::Path,
};

use lossyfs::{CutMode, Mounted};

/// A fresh backing directory and mount, or `None` (after saying why) where
/// FUSE is missing.
fn mounted(test: &str) -> Option<(tempfile::TempDir, Mounted)> {
    if let Err(why) = lossyfs::fuse_available() {
        assert!(
            std::env::var_os("SETTINGSD_REQUIRE_FUSE").is_none_or(|v| v != "1"),
            "SETTINGSD_REQUIRE_FUSE=1 but {why}"
        );
        // Straight to stderr, past the test harness's capture.
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {why} ***\n");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("backing")).unwrap();
    std::fs::create_dir(dir.path().join("mnt")).unwrap();
    let mount = lossyfs::mount(&dir.path().join("backing"), &dir.path().join("mnt")).unwrap();
    Some((dir, mount))
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

#[test]
fn a_cut_keeps_synced_data_and_drops_the_rest() {
    let Some((dir, mount)) = mounted("a_cut_keeps_synced_data_and_drops_the_rest") else {
        return;
    };
    let mnt = dir.path().join("mnt");
    let mut file = File::create(mnt.join("f")).unwrap();
    file.write_all(&[1; 10_000]).unwrap();
    file.sync_data().unwrap();
    sync_dir(&mnt);
    file.write_all_at(&[2; 100], 5000).unwrap();
    file.write_all_at(&[3; 100], 20_000).unwrap();
    let unsynced = File::create(mnt.join("g")).unwrap();
    unsynced.sync_all().unwrap(); // the file, not its directory entry
    drop((file, unsynced));

    let report = mount.control().cut(CutMode::Drop).unwrap();
    mount.unmount().unwrap();

    let backing = dir.path().join("backing");
    assert_eq!(std::fs::read(backing.join("f")).unwrap(), vec![1; 10_000]);
    assert!(
        !backing.join("g").exists(),
        "an unsynced directory entry is lost"
    );
    assert_eq!(report.entries_undone, 1);
    assert!(report.pages_lost >= 2, "{report:?}");
}

#[test]
fn an_unsynced_unlink_and_rename_are_undone_and_synced_ones_kept() {
    let Some((dir, mount)) =
        mounted("an_unsynced_unlink_and_rename_are_undone_and_synced_ones_kept")
    else {
        return;
    };
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(mnt.join("sub")).unwrap();
    for name in ["a", "b", "sub/c"] {
        std::fs::write(mnt.join(name), name).unwrap();
        File::open(mnt.join(name)).unwrap().sync_all().unwrap();
    }
    sync_dir(&mnt);
    sync_dir(&mnt.join("sub"));
    std::fs::rename(mnt.join("a"), mnt.join("b")).unwrap();
    std::fs::remove_file(mnt.join("sub/c")).unwrap();
    std::fs::write(mnt.join("sub/d"), "d").unwrap();
    File::open(mnt.join("sub/d")).unwrap().sync_all().unwrap();
    sync_dir(&mnt.join("sub"));

    mount.control().cut(CutMode::Drop).unwrap();
    mount.unmount().unwrap();

    let backing = dir.path().join("backing");
    assert_eq!(std::fs::read_to_string(backing.join("a")).unwrap(), "a");
    assert_eq!(std::fs::read_to_string(backing.join("b")).unwrap(), "b");
    assert!(!backing.join("sub/c").exists(), "a synced unlink stays");
    assert_eq!(std::fs::read_to_string(backing.join("sub/d")).unwrap(), "d");
}

#[test]
fn a_torn_cut_keeps_some_unsynced_pages_reproducibly() {
    let run = |seed| {
        let (dir, mount) = mounted("a_torn_cut_keeps_some_unsynced_pages_reproducibly")?;
        let mnt = dir.path().join("mnt");
        let file = File::create(mnt.join("f")).unwrap();
        // 64 synced pages of zeros, so that the length is the same
        // whichever one the cut keeps; then every page rewritten, unsynced.
        file.write_all_at(&[0; 64 * 4096], 0).unwrap();
        file.sync_all().unwrap();
        sync_dir(&mnt);
        for page in 0..64u8 {
            file.write_all_at(&[page + 1; 4096], u64::from(page) * 4096)
                .unwrap();
        }
        drop(file);
        let report = mount.control().cut(CutMode::Torn { seed }).unwrap();
        mount.unmount().unwrap();
        Some((std::fs::read(dir.path().join("backing/f")).unwrap(), report))
    };
    let Some((first, report)) = run(7) else {
        return;
    };
    let (again, _) = run(7).unwrap();

    assert_eq!(first, again, "the same seed tears the same way");
    assert_eq!(first.len(), 64 * 4096);
    let kept = (0..64).filter(|p| first[p * 4096] == *p as u8 + 1).count();
    let zeroed = (0..64).filter(|p| first[p * 4096] == 0).count();
    assert_eq!(
        kept + zeroed,
        64,
        "every page is either the new or the synced one"
    );
    assert_eq!(kept, report.pages_kept);
    assert!(report.pages_kept > 0 && report.pages_lost > 0, "{report:?}");
}

#[test]
fn injected_faults_fail_syncs_with_eio_and_writes_with_enospc_until_cleared() {
    let Some((dir, mount)) =
        mounted("injected_faults_fail_syncs_with_eio_and_writes_with_enospc_until_cleared")
    else {
        return;
    };
    let control = mount.control();
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.path().join("mnt/f"))
        .unwrap();

    control.command("fail-sync 1").unwrap();
    let failed_sync = file.sync_data().unwrap_err();
    let next_sync = file.sync_data();
    control.command("enospc on").unwrap();
    let full = file.write_all(b"x").unwrap_err();
    control.command("enospc off").unwrap();
    let written = file.write_all(b"x");

    assert_eq!(failed_sync.raw_os_error(), Some(libc::EIO));
    assert!(next_sync.is_ok(), "only the next sync fails");
    assert_eq!(full.raw_os_error(), Some(libc::ENOSPC));
    assert!(written.is_ok());
    assert!(control.command("no such command").is_err());
}

/// As on Linux, a failed fsync loses the file's unsynced writes for good: a
/// later fsync succeeds but does not bring them back, and a cut drops them;
/// a page written again after the failure and synced is kept.
#[test]
fn a_failed_fsync_loses_its_writes_even_after_a_later_successful_one() {
    let Some((dir, mount)) =
        mounted("a_failed_fsync_loses_its_writes_even_after_a_later_successful_one")
    else {
        return;
    };
    let control = mount.control();
    let mnt = dir.path().join("mnt");
    let file = File::create(mnt.join("f")).unwrap();
    file.write_all_at(&[b'o'; 2 * 4096], 0).unwrap();
    file.sync_all().unwrap();
    sync_dir(&mnt);

    file.write_all_at(&[b'x'; 2 * 4096], 0).unwrap();
    control.command("fail-sync 1").unwrap();
    let failed = file.sync_data().unwrap_err();
    let later = file.sync_data();
    file.write_all_at(&[b'y'; 10], 4096).unwrap();
    let rewritten = file.sync_data();
    drop(file);
    control.cut(CutMode::Drop).unwrap();
    mount.unmount().unwrap();
    let after = std::fs::read(dir.path().join("backing/f")).unwrap();

    assert_eq!(failed.raw_os_error(), Some(libc::EIO));
    assert!(later.is_ok() && rewritten.is_ok());
    assert_eq!(after.len(), 2 * 4096);
    assert!(
        after[..4096].iter().all(|b| *b == b'o'),
        "page 0: the failed write is gone"
    );
    assert_eq!(
        &after[4096..4106],
        b"yyyyyyyyyy",
        "page 1: written again and synced"
    );
    assert!(
        after[4106..].iter().all(|b| *b == b'x'),
        "page 1 reached the disk whole with its next write, as the page cache held it"
    );
}

/// A child `lossyfs` that is unmounted (lazily), killed and reaped when
/// dropped, also when a test panics.
struct Reaped {
    child: std::process::Child,
    mountpoint: std::path::PathBuf,
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = std::process::Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mountpoint)
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn the_binary_takes_commands_on_its_control_socket_and_exits_when_unmounted() {
    use std::io::{BufRead, BufReader};
    let test = "the_binary_takes_commands_on_its_control_socket_and_exits_when_unmounted";
    let Some((dir, mount)) = mounted(test) else {
        return;
    };
    drop(mount); // this test mounts through the binary instead
    let (backing, mnt, socket) = (
        dir.path().join("backing"),
        dir.path().join("mnt"),
        dir.path().join("control.sock"),
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_lossyfs"))
        .args([&backing, &mnt, &socket])
        .stdout(std::process::Stdio::piped())
        // Not the test's own stderr: a leftover child must not hold the
        // test run's output open.
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // If an assertion fails below, the mount and the process go with it.
    let mut child = Reaped {
        child,
        mountpoint: mnt.clone(),
    };
    let mut ready = String::new();
    BufReader::new(child.child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let mut answers = BufReader::new(stream.try_clone().unwrap()).lines();
    let mut ask = |command: &str| {
        writeln!(&stream, "{command}").unwrap();
        answers.next().unwrap().unwrap()
    };

    std::fs::write(mnt.join("unsynced"), b"lost").unwrap();
    let status = ask("status");
    let unknown = ask("power on");
    let cut = ask("cut drop");
    let unmounted = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    let exit = child.child.wait().unwrap();

    assert_eq!(ready.trim(), "ready");
    assert_eq!(status, "ok syncs=0");
    assert!(unknown.starts_with("error unknown command"), "{unknown}");
    assert!(cut.starts_with("ok files=1 "), "{cut}");
    assert!(unmounted.success() && exit.success(), "{exit:?}");
    assert!(!backing.join("unsynced").exists());
}
