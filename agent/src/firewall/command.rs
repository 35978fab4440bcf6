//! Running the firewall tools (`nft`, `ipset`, `iptables`): one process per
//! batch, the batch on stdin, stderr kept for the error.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::FirewallError;

/// Runs tools directly, or through a wrapper such as `ip netns exec NS`.
#[derive(Debug, Clone, Default)]
pub struct Runner {
    wrapper: Vec<String>,
}

impl Runner {
    pub fn wrapped(wrapper: Vec<String>) -> Self {
        Runner { wrapper }
    }

    fn shown(&self, program: &str) -> String {
        let mut s = self.wrapper.join(" ");
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(program);
        s
    }

    /// Runs `program args`, feeding `stdin`; its stdout on success.
    pub async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, FirewallError> {
        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        };
        let spawn_err = |source| FirewallError::Spawn {
            program: self.shown(program),
            source,
        };
        let mut child = cmd
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_err)?;
        if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A tool that fails early closes its stdin; its stderr says why.
            let _ = pipe.write_all(script.as_bytes()).await;
            drop(pipe);
        }
        let out = child.wait_with_output().await.map_err(spawn_err)?;
        if !out.status.success() {
            return Err(FirewallError::Refused {
                program: self.shown(program),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .chars()
                    .take(2_000)
                    .collect(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
