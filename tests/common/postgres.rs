//! A PostgreSQL server of a test's own, from Debian's packages: `initdb`
//! into a temporary folder, `pg_ctl start` on a free port with its socket
//! in that folder; stopped and removed when the guard is dropped (a panic
//! too). As root, the server runs as the `postgres` user (or `nobody`):
//! PostgreSQL refuses to run as root.
#![allow(dead_code)]

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

/// A running server; stopped and removed on drop.
pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    user: Option<String>,
}

/// The folder of the newest PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect(
        "the PostgreSQL tests need PostgreSQL's programs in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql; .ci/test does)",
    )
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

impl Postgres {
    /// Starts a server with a superuser `warren` (trust authentication,
    /// loopback and its socket only).
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("warren-pg-")
            .tempdir()
            .expect("temp dir");
        let user = is_root().then(|| {
            let user = if Command::new("id")
                .arg("postgres")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                "postgres"
            } else {
                "nobody"
            };
            let _ = Command::new("chown")
                .args(["-R", user, dir.path().to_str().unwrap()])
                .status();
            user.to_string()
        });
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut server = Postgres {
            dir,
            port: 0,
            bin,
            user,
        };
        let data = server.data();
        let out = server
            .command("initdb")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "warren",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A free port: bind, read, release, start; another process could
        // take it in between, so try a few.
        for _ in 0..5 {
            server.port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if server.pg_ctl_start() {
                return server;
            }
        }
        panic!("PostgreSQL did not start: {}", server.log());
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        command.stdin(Stdio::null()).current_dir(self.dir.path());
        command
    }

    fn pg_ctl_start(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        self.command("pg_ctl")
            .args(["-D", self.data().to_str().unwrap(), "-l"])
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `pg_ctl stop -m fast`: connections are closed, the server stops.
    pub fn stop(&self) {
        let status = self
            .command("pg_ctl")
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl stop");
        assert!(status.success(), "pg_ctl stop");
    }

    /// Starts it again on the same port.
    pub fn start_again(&self) {
        assert!(
            self.pg_ctl_start(),
            "PostgreSQL did not start again: {}",
            self.log()
        );
    }

    /// The URL of database `postgres` as user `warren` over TCP.
    pub fn url(&self) -> String {
        format!("postgres://warren@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs `sql` with psql; its output (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        let out = self
            .command("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "warren",
                "-d",
                "postgres",
            ])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until the server answers.
    pub fn wait_ready(&self, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            let ok = self
                .command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The data folder's path (for messages).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
