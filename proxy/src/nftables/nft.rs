//! Running the `nft` command: a script on its standard input is one atomic transaction (as
//! upstream's knftables drives the kernel), so a failed script changes nothing.

use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// Why a transaction was not applied.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("nft failed ({status}): {stderr}")]
    Failed { status: std::process::ExitStatus, stderr: String },
}

/// The `nft` program.
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
}

impl Default for Nft {
    /// Debian's `/usr/sbin/nft` when present (root's PATH may lack `/usr/sbin`), else `nft` on PATH.
    fn default() -> Self {
        let sbin = PathBuf::from("/usr/sbin/nft");
        Self { program: if sbin.exists() { sbin } else { PathBuf::from("nft") } }
    }
}

/// At most this much of nft's error output goes into an error.
const MAX_STDERR: usize = 4096;

impl Nft {
    fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.program);
        c.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    fn spawn_error(&self, source: std::io::Error) -> NftError {
        NftError::Spawn { program: self.program.display().to_string(), source }
    }

    /// Applies `script` as one transaction.
    pub async fn run(&self, script: &str) -> Result<(), NftError> {
        let mut child = tokio::process::Command::from(self.command())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.spawn_error(e))?;
        let mut stdin = child.stdin.take();
        // Written while nft runs, so a large script cannot wedge on a full pipe.
        let write = async {
            if let Some(stdin) = stdin.as_mut() {
                let _ = stdin.write_all(script.as_bytes()).await;
            }
            drop(stdin);
        };
        let ((), output) = tokio::join!(write, child.wait_with_output());
        check(output.map_err(|e| self.spawn_error(e))?)
    }

    /// [`Nft::run`] without a runtime (small scripts only: the table's removal on drop).
    pub fn run_blocking(&self, script: &str) -> Result<(), NftError> {
        use std::io::Write;
        let mut child = self.command().spawn().map_err(|e| self.spawn_error(e))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        check(child.wait_with_output().map_err(|e| self.spawn_error(e))?)
    }
}

fn check(output: std::process::Output) -> Result<(), NftError> {
    if output.status.success() {
        return Ok(());
    }
    let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if stderr.len() > MAX_STDERR {
        let mut cut = MAX_STDERR;
        while !stderr.is_char_boundary(cut) {
            cut -= 1;
        }
        stderr.truncate(cut);
        stderr.push_str(" …");
    }
    Err(NftError::Failed { status: output.status, stderr })
}
