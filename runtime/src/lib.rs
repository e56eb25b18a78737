//! The few process-level helpers every mirrorfleet binary shares: running an async `main`
//! and turning its outcome into an exit status, the one shutdown signal, logging set-up, and
//! an error printed with its causes.
//!
//! It must stay small and know nothing of the fleet: no store, no HTTP, no Kubernetes — the
//! node agent links it too.

use std::fmt::Display;
use std::process::ExitCode;

/// Formats an error with its causes, `a: b: c` (for logs, where `{:#}` is not available).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Runs a binary's async `main` on a multi-thread runtime and turns the outcome into the exit
/// status: `main`'s own code, or 2 with the error and its causes printed once as
/// `program: error: …` (also when the runtime cannot start). `E` prints its causes with
/// `{:#}`, as `anyhow::Error` does.
pub fn block_on_main<E: Display>(
    program: &str,
    main: impl Future<Output = Result<ExitCode, E>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(main) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{program}: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Resolves on SIGINT or SIGTERM: the one shutdown signal a binary fans out to its parts.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

/// Sets up logging to stderr, filtered by `RUST_LOG` (default `info`); JSON lines when `json`.
pub fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot read the fleet")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_chain_names_every_cause_once() {
        let e = Outer(std::io::Error::other("disk gone"));
        assert_eq!(error_chain(&e), "cannot read the fleet: disk gone");
    }

    #[test]
    fn block_on_main_owns_the_exit_status() {
        assert_eq!(
            block_on_main("t", async { Ok::<_, String>(ExitCode::from(1)) }),
            ExitCode::from(1)
        );
        assert_eq!(
            block_on_main("t", async { Err::<ExitCode, _>("boom") }),
            ExitCode::from(2)
        );
    }
}
