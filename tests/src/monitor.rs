//! `netd monitor` as a test runs it: a child process whose lines are read
//! as they come.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::process::{netd_bin, Netd};

/// `netd monitor ARGS` running, its stdout read a line at a time.
pub struct Monitor {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Monitor {
    pub fn start(netd: &Netd, args: &[&str]) -> Self {
        let mut child = Command::new(netd_bin())
            .arg("--socket")
            .arg(netd.socket())
            .arg("monitor")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("netd monitor");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The lines it printed while `provoke` ran again and again, until it
    /// had printed `n` (it starts listening a moment after it starts).
    pub fn collect(&self, n: usize, provoke: impl Fn()) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while got.len() < n {
            assert!(Instant::now() < deadline, "monitor printed only {got:?}");
            provoke();
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                got.push(line);
                if got.len() == n {
                    break;
                }
            }
        }
        got
    }

    pub fn wait(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "netd monitor did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
