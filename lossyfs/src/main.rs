//! `lossyfs BACKING MOUNTPOINT CONTROL_SOCKET`: mounts a lossyfs (see the
//! library docs) and serves its control protocol on a unix socket, one text
//! command per line, one answer line each (`ok ...` or `error ...`):
//!
//! ```text
//! $ lossyfs /tmp/backing /mnt/lossy /tmp/lossy.sock &
//! $ echo 'cut torn 42' | socat - UNIX-CONNECT:/tmp/lossy.sock
//! ok files=1 pages_lost=3 pages_kept=2 entries_undone=0
//! $ fusermount3 -u /mnt/lossy    # lossyfs exits; mount again to power on
//! ```
//!
//! Prints `ready` on stdout once the file system is mounted and the socket
//! takes commands; exits when the file system is unmounted.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixListener,
    path::PathBuf,
};

fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [backing, mountpoint, socket] = args.as_slice() else {
        eprintln!("usage: lossyfs BACKING MOUNTPOINT CONTROL_SOCKET");
        std::process::exit(2);
    };
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    let mounted = lossyfs::mount(backing, mountpoint)?;
    let control = mounted.control();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let control = control.clone();
            std::thread::spawn(move || {
                let Ok(mut writer) = stream.try_clone() else {
                    return;
                };
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let answer = match control.command(&line) {
                        Ok(ok) => ok,
                        Err(e) => format!("error {e}"),
                    };
                    if writeln!(writer, "{answer}").is_err() {
                        return;
                    }
                }
            });
        }
    });
    println!("ready");
    // Runs until `fusermount3 -u` ends the session.
    mounted.wait()
}
