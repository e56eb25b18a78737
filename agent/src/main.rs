//! `mirrorfleet-agent`: the node agent on its own (the same as `mirrorfleet agent`), for a
//! micro mirror that should not carry the whole CLI.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "mirrorfleet-agent",
    version,
    about = "Keeps a mirror node in sync with its fleet: MQTT pushes, paced rsync, sync reports"
)]
struct Cli {
    #[command(flatten)]
    args: mirrorfleet_agent::Args,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mirrorfleet_runtime::init_logging(cli.log_json);
    mirrorfleet_runtime::block_on_main("mirrorfleet-agent", async move {
        mirrorfleet_agent::run(cli.args, mirrorfleet_runtime::shutdown_signal())
            .await
            .map_err(anyhow::Error::from)?;
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    })
}
