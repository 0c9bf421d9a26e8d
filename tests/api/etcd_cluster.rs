//! Real etcd clusters for the tests: each member a real `etcd` process on
//! loopback ports with its own data directory, started and stopped by PID.
//!
//! Each member runs under a small shell that kills it when this test
//! process goes away (its stdin, a pipe from us, closes), so a test binary
//! that panics or is killed leaves no etcd behind. A member logs to a file
//! in its directory (not to a pipe, which would kill etcd with SIGPIPE once
//! nobody reads it); it is ready when it logs "ready to serve client
//! requests". Plain processes and files, no async runtime: a cluster may
//! outlive the test runtime that started it (the shared cluster of the
//! etcd run of the semantic suites).
//!
//! Where `etcd` comes from is the test command's job (`scripts/test`
//! installs Debian's `etcd-server`, 3.4.23). Without it the etcd tests say
//! so and pass, unless `SETTINGSD_REQUIRE_ETCD=1` (CI sets it) makes that a
//! failure.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The etcd binary: `$SETTINGSD_ETCD_BIN`, or `etcd` on the PATH.
fn etcd_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SETTINGSD_ETCD_BIN") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    })
}

/// Whether etcd tests can run here; panics if they must and cannot.
pub fn etcd_available() -> bool {
    let found = etcd_binary().is_some();
    if !found {
        assert!(
            std::env::var_os("SETTINGSD_REQUIRE_ETCD").is_none(),
            "SETTINGSD_REQUIRE_ETCD is set but no etcd binary was found \
             (PATH or SETTINGSD_ETCD_BIN)"
        );
        eprintln!("etcd not found: skipping (install etcd-server, or see scripts/test)");
    }
    found
}

/// The 3-member cluster every test of a run shares when the semantic
/// suites run on etcd (`SETTINGSD_TEST_STORE=etcd`); each test server uses
/// a key prefix of its own on it.
pub fn shared_cluster() -> &'static EtcdCluster {
    static CLUSTER: OnceLock<EtcdCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| EtcdCluster::start(3))
}

/// How long a member may take to say it is ready, or to die.
const WITHIN: Duration = Duration::from_secs(30);
/// How often a wait looks at a log file or a PID.
const POLL: Duration = Duration::from_millis(10);

/// One etcd member.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    /// The watchdog shell (its stdin is our pipe) and etcd's PID.
    process: Option<(Child, u32)>,
    /// How many times it was started (each start logs to its own file).
    starts: usize,
}

/// A cluster of real etcd members on loopback; killed when dropped.
pub struct EtcdCluster {
    members: Vec<Member>,
    /// Extra etcd flags of every member.
    flags: Vec<String>,
    _dir: tempfile::TempDir,
}

/// `count` distinct free ports. The listeners are held until all are
/// picked: released one by one, the OS could hand the same port out twice
/// (CI saw "initial cluster ... has duplicate url").
fn free_ports(count: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

fn alive(pid: u32) -> bool {
    // Not a zombie either: a killed member's zombie (until the watchdog
    // shell reaps it) holds no port.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

impl EtcdCluster {
    /// Starts `n` members and waits until each serves clients.
    pub fn start(n: usize) -> EtcdCluster {
        Self::start_with(n, &[])
    }

    /// [`EtcdCluster::start`] with extra etcd flags for every member.
    pub fn start_with(n: usize, flags: &[&str]) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(2 * n);
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                dir: dir.path().join(format!("m{i}")),
                process: None,
                starts: 0,
            })
            .collect();
        let flags = flags.iter().map(|f| (*f).to_owned()).collect();
        let mut cluster = EtcdCluster {
            members,
            flags,
            _dir: dir,
        };
        let all: Vec<usize> = (0..n).collect();
        cluster.start_members(&all, "new");
        cluster
    }

    /// The client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// `--etcd-endpoints`' value.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts `members` together (state "new" for a new cluster,
    /// "existing" for a restart on their data directories) and waits until
    /// each serves clients.
    fn start_members(&mut self, members: &[usize], state: &str) {
        let logs: Vec<PathBuf> = members.iter().map(|i| self.spawn(*i, state)).collect();
        for (i, log) in members.iter().zip(logs) {
            let deadline = Instant::now() + WITHIN;
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("ready to serve client requests") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {i} not ready within {WITHIN:?}; its log:\n{text}"
                );
                std::thread::sleep(POLL);
            }
        }
    }

    /// Starts member `i`; returns the log file it writes.
    fn spawn(&mut self, i: usize, state: &str) -> PathBuf {
        let initial_cluster = self.initial_cluster();
        let binary = etcd_binary().expect("etcd binary");
        let member = &mut self.members[i];
        assert!(member.process.is_none(), "member {i} is running");
        std::fs::create_dir_all(&member.dir).expect("member dir");
        member.starts += 1;
        let log = member.dir.join(format!("etcd.{}.log", member.starts));
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        // The shell starts etcd, prints its PID, then waits for its stdin
        // to close (this process exiting, or a kill) and kills etcd.
        let script = r#"log="$1"; bin="$2"; shift 2; "$bin" "$@" >"$log" 2>&1 & e=$!; echo "$e"; read _; kill -9 $e 2>/dev/null; wait"#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&log)
            .arg(&binary)
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(member.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "settingsd-test"])
            // Faster elections, so failover does not wait on the defaults.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(&self.flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        let mut pid = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut pid,
        )
        .expect("the watchdog shell prints etcd's PID");
        let pid = pid.trim().parse().expect("a PID");
        member.process = Some((child, pid));
        log
    }

    /// SIGKILLs member `i` (no clean shutdown) and waits until it is gone.
    pub fn kill(&mut self, i: usize) {
        let Some((mut shell, pid)) = self.members[i].process.take() else {
            return;
        };
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let deadline = Instant::now() + WITHIN;
        while alive(pid) {
            assert!(Instant::now() < deadline, "etcd {pid} did not die");
            std::thread::sleep(POLL);
        }
        // Closing its stdin lets the watchdog shell exit.
        drop(shell.stdin.take());
        let _ = shell.wait();
    }

    /// Restarts member `i` on its data directory and waits until it serves
    /// (it needs a quorum to say so: see [`EtcdCluster::restart_stopped`]).
    pub fn restart(&mut self, i: usize) {
        self.start_members(&[i], "existing");
    }

    /// Restarts every member that is not running, together (a cluster
    /// without quorum needs them at once), and waits until each serves.
    pub fn restart_stopped(&mut self) {
        let stopped: Vec<usize> = (0..self.members.len())
            .filter(|i| self.members[*i].process.is_none())
            .collect();
        self.start_members(&stopped, "existing");
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
