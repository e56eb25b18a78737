//! Runs one rsync stage as a child process under an overall deadline (killed when it passes),
//! reading its `--stats` and keeping the end of its stderr for the error. The command line
//! is [`crate::plan`]'s; nothing here decides what to sync.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::plan;

/// How much of rsync's stderr an error keeps (its end).
const STDERR_EXCERPT: usize = 600;

/// Why a stage failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// rsync could not be started.
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// rsync exited with an error.
    #[error("rsync exited with {code} ({meaning}): {stderr}")]
    Exit {
        code: i32,
        meaning: &'static str,
        stderr: String,
    },
    /// rsync was killed by a signal.
    #[error("rsync was killed by a signal: {stderr}")]
    Signal { stderr: String },
    /// The overall deadline passed; rsync was killed.
    #[error("rsync still running after the {}s deadline; killed", deadline.as_secs())]
    Deadline { deadline: Duration },
}

/// Runs `program` with `args` until it exits or `deadline` passes; the bytes it received.
pub async fn stage(
    program: &Path,
    args: &[OsString],
    deadline: Duration,
) -> Result<u64, StageError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| StageError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out = tokio::spawn(async move {
        let mut s = Vec::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_end(&mut s).await;
        }
        s
    });
    let err = tokio::spawn(async move {
        // Only the end is kept, however much rsync says.
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        if let Some(e) = stderr.as_mut() {
            while let Ok(n) = e.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 4 * STDERR_EXCERPT {
                    kept.drain(..kept.len() - STDERR_EXCERPT);
                }
            }
        }
        kept
    });
    let status = match tokio::time::timeout(deadline, child.wait()).await {
        Ok(status) => status.map_err(|source| StageError::Spawn {
            program: program.display().to_string(),
            source,
        })?,
        Err(_) => {
            let _ = child.kill().await;
            return Err(StageError::Deadline { deadline });
        }
    };
    let stdout = String::from_utf8_lossy(&out.await.unwrap_or_default()).into_owned();
    let stderr_raw = err.await.unwrap_or_default();
    let stderr = plan::tail(&String::from_utf8_lossy(&stderr_raw), STDERR_EXCERPT).to_owned();
    match status.code() {
        Some(0) => Ok(plan::bytes_received(&stdout).unwrap_or(0)),
        Some(code) => Err(StageError::Exit {
            code,
            meaning: plan::exit_meaning(code),
            stderr,
        }),
        None => Err(StageError::Signal { stderr }),
    }
}
