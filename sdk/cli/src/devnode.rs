//! A `trellis-node --dev` child process for `trellis demo`: found next to
//! this program or on PATH, its data in a temporary directory, its API on a
//! free loopback port. Dropping the guard kills it and removes the data, so
//! it stops on success, on error and when the demo is interrupted.

use crate::error::{Class, CliError, Result};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODE_BIN: &str = "trellis-node";
/// A dev node opens its storage and API in well under a second; allow for a busy machine.
const START_DEADLINE: Duration = Duration::from_secs(60);
const START_ATTEMPTS: usize = 5;

/// The exact commands that give `demo` or `bench --start` a node, for when
/// it cannot start one.
pub const HOW_TO_START: &str = "start a dev node in another terminal and run the command again:\n\
     \n    cargo run -p trellis-node -- --dev\n\n\
     or build the node (cargo build -p trellis-node) so `trellis` can start one itself";

/// The `trellis-node` binary: `explicit`, else next to this program, else on PATH.
pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return if path.is_file() {
            // Absolute, because the node is started in a directory of its own.
            std::path::absolute(path)
                .map_err(|e| CliError::other(format!("resolving {}: {e}", path.display())))
        } else {
            Err(CliError::new(
                Class::Unreachable,
                format!("no trellis-node binary at {}", path.display()),
            )
            .with_hint(HOW_TO_START))
        };
    }
    let mut looked = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let candidate = dir.join(NODE_BIN);
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(dir.display().to_string());
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(NODE_BIN);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        looked.push("PATH".into());
    }
    Err(CliError::new(
        Class::Unreachable,
        format!(
            "no node answers, and no trellis-node binary to start one (looked in {})",
            looked.join(" and ")
        ),
    )
    .with_hint(HOW_TO_START))
}

/// A running `trellis-node --dev`; killed and cleaned up on drop.
pub struct DevNodeProcess {
    child: Child,
    url: String,
    log: PathBuf,
    /// Dropped after the child is killed.
    dir: tempfile::TempDir,
}

impl DevNodeProcess {
    /// Starts `binary --dev` on a free loopback port and waits until its API answers.
    pub async fn start(binary: &Path) -> Result<DevNodeProcess> {
        Self::start_with(binary, &[]).await
    }

    /// [`DevNodeProcess::start`] with more arguments for the node.
    pub async fn start_with(binary: &Path, args: &[&str]) -> Result<DevNodeProcess> {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("trellis-demo-")
                .tempdir()
                .map_err(|e| CliError::other(format!("creating a temporary directory: {e}")))?;
            let port = free_port()?;
            let listen = format!("127.0.0.1:{port}");
            let log = dir.path().join("node.log");
            let log_file = std::fs::File::create(&log)
                .map_err(|e| CliError::other(format!("creating {}: {e}", log.display())))?;
            let log_err = log_file
                .try_clone()
                .map_err(|e| CliError::other(e.to_string()))?;
            let child = Command::new(binary)
                .arg("--dev")
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .arg("--api-listen")
                .arg(&listen)
                .args(args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log_file)
                .stderr(log_err)
                .spawn()
                .map_err(|e| {
                    CliError::new(
                        Class::Unreachable,
                        format!("starting {}: {e}", binary.display()),
                    )
                    .with_hint(HOW_TO_START)
                })?;
            let mut node = DevNodeProcess {
                child,
                url: format!("http://{listen}"),
                log,
                dir,
            };
            match node.wait_healthy().await {
                Ok(()) => return Ok(node),
                Err(log) if log.contains("binding the API") || log.contains("in use") => {
                    last_log = log;
                    continue;
                }
                Err(log) => {
                    return Err(CliError::new(
                        Class::Unreachable,
                        format!("the dev node did not start; its log:\n{}", tail(&log)),
                    ));
                }
            }
        }
        Err(CliError::new(
            Class::Unreachable,
            format!(
                "the dev node found no free port in {START_ATTEMPTS} tries; its log:\n{}",
                tail(&last_log)
            ),
        ))
    }

    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Its API base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for `/health`; on failure returns the node's log.
    async fn wait_healthy(&mut self) -> Result<(), String> {
        let client = trellis_sdk::Client::builder()
            .endpoint(&self.url)
            .request_timeout(Duration::from_secs(2))
            .retry(trellis_sdk::RetryPolicy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "(exited with {status})\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            if client.health().await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "(no answer within {START_DEADLINE:?})\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for DevNodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn free_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| CliError::other(format!("finding a free loopback port: {e}")))
}

/// The first of `count` consecutive loopback ports free now, below the
/// ephemeral range (so no outgoing connection takes one before a node binds
/// it), and clear of the range `avoid`.
pub fn free_ports(count: u16, avoid: Option<(u16, u16)>) -> Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.saturating_sub(count).max(10_001));
    for _ in 0..1_000 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let base = low + (random % u64::from(high - low)) as u16;
        let overlaps = avoid.is_some_and(|(a, n)| base < a + n && a < base + count);
        if !overlaps
            && (base..base + count).all(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok())
        {
            return Ok(base);
        }
    }
    Err(CliError::other(format!(
        "no {count} consecutive free loopback ports"
    )))
}

pub(crate) fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
