//! `mirrorfleet`: the fleet's admin CLI. Parses arguments, runs one command, prints errors
//! once with their causes, and owns the exit codes: 0 success, 1 problems found, 2 could not
//! run.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mirrorfleet_crds::validate::Options;
use mirrorfleet_operator::manifests;

#[derive(Debug, Parser)]
#[command(
    name = "mirrorfleet",
    version,
    about = "Download redirector and mirror-fleet manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check manifests (files or directories of multi-document YAML) as one fleet: schema,
    /// CEL rules, references between resources and contradictions. Exit status 0 when all is
    /// well, 1 when problems were found, 2 when the check could not run.
    Validate {
        /// Files or directories to check.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Ignore documents that are not mirrorfleet resources instead of reporting them.
        #[arg(long)]
        skip_foreign: bool,
    },
    /// Print the CustomResourceDefinitions as YAML (for `kubectl apply -f -`).
    Crds,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// One problem per line: `file:line: Kind/name: field.path: what is wrong`.
    Text,
    /// A JSON object for tools.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mirrorfleet: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate {
            paths,
            format,
            skip_foreign,
        } => validate(&paths, format, Options { skip_foreign }),
        Command::Crds => {
            print!("{}", mirrorfleet_crds::v1alpha1::crds_yaml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(paths: &[PathBuf], format: Format, options: Options) -> anyhow::Result<ExitCode> {
    let manifests = manifests::read(paths)?;
    let outcome = manifests.validate(options);
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Text => {
            for problem in &outcome.problems {
                writeln!(stdout, "{problem}")?;
            }
            let n = outcome.problems.len();
            eprintln!(
                "{} in {} document{} of {} file{}",
                match n {
                    0 => "no problems".to_owned(),
                    1 => "1 problem".to_owned(),
                    n => format!("{n} problems"),
                },
                outcome.documents,
                if outcome.documents == 1 { "" } else { "s" },
                manifests.files.len() + manifests.problems.len(),
                if manifests.files.len() + manifests.problems.len() == 1 {
                    ""
                } else {
                    "s"
                },
            );
        }
        Format::Json => {
            let report = serde_json::json!({
                "files": manifests.files.len() + manifests.problems.len(),
                "documents": outcome.documents,
                "problems": outcome.problems,
            });
            writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?;
        }
    }
    stdout.flush()?;
    Ok(if outcome.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
