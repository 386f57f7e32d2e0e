//! `agentpmt`: command-line client of the External Agent API.
//!
//! - `agentpmt wallet new [--remote]|import|show`: the local wallet, an encrypted keystore
//!   file (Web3 Secret Storage v3) at `<home>/keystore/wallet.json`; `--remote` has the
//!   server generate it (`POST /api/external/agentaddress`).
//! - `agentpmt admin wallet|credits …`: the operator API, with `AGENTPMT_ADMIN_TOKEN`.
//! - `agentpmt balance`: the wallet's credit balance (a signed request).
//! - `agentpmt credits buy N`: buy credits with an x402 payment signed by the wallet.
//! - `agentpmt tools list|show|invoke`: the tool marketplace (credits or `--x402`).
//! - `agentpmt sign`: builds and signs a request message and shows every intermediate
//!   (canonical payload, hash, exact message, signature) to debug client signing.
//! - `agentpmt workflows list|show|start|active|end`: workflows and this wallet's sessions.
//! - `agentpmt schedules due|claim|advance|release|work`: BYO-agent schedule workers, with
//!   the API-key + budget-key bearer from the environment.
//! - `agentpmt jobs list|reserve|complete|status|run`: the jobs board (`run` works through
//!   it with a user-supplied command).
//!
//! Every command prints text, or one JSON object on stdout with `--json` (the workers:
//! one JSON object per line per event). Exit codes: 0 on success, 1 when the command
//! failed (the server's error envelope is shown), 2 for usage errors; the workers add
//! 2 configuration error, 3 every item failed, 4 CMD cannot be started, 130 interrupted
//! (see [`worker`]). Environment variables are listed in [`ENVIRONMENT_HELP`].

mod admin;
mod balance;
mod credits;
mod jobs;
mod keys;
mod mcp;
mod output;
mod schedules;
mod sign;
mod tools;
mod wallet;
mod worker;
mod workflows;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use output::Output;
use std::path::PathBuf;
use std::process::ExitCode;

/// Default `--server`.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The environment variables, shown at the end of `--help`.
const ENVIRONMENT_HELP: &str = "\
Environment:
  AGENTPMT_SERVER             same as --server
  AGENTPMT_HOME               same as --home
  AGENTPMT_KEYSTORE           same as --keystore
  AGENTPMT_KEYSTORE_PASSWORD  keystore password (otherwise asked on the terminal)
  AGENTPMT_PRIVATE_KEY        0x-hex private key used instead of the keystore by every command
                              that signs (for scripts and CI), and the input of `wallet import`.
                              A private key is never accepted as a command-line argument.
  AGENTPMT_ADMIN_TOKEN        the server's admin token, for `agentpmt admin ...`
  AGENTPMT_BEARER_TOKEN       API-key + budget-key bearer (base64 of api_key:budget_key), for
                              `agentpmt schedules ...`
  AGENTPMT_API_KEY, AGENTPMT_BUDGET_KEY
                              the two keys instead of AGENTPMT_BEARER_TOKEN
  AGENTPMT_JOB_ID, AGENTPMT_JOB_WORKFLOW_TOKEN
                              the job and its reservation's workflow token, for
                              `agentpmt jobs workflow ...` (set by `jobs run` for its CMD)
The workers (`jobs run`, `schedules work`) remove every AGENTPMT_* variable from their
CMD's environment and set only the documented ones (see their --help).";

/// Command-line client of the External Agent API.
#[derive(Debug, Parser)]
#[command(name = "agentpmt", version, about, after_help = ENVIRONMENT_HELP)]
struct Cli {
    /// Base URL of the API server.
    #[arg(long, global = true, env = "AGENTPMT_SERVER", default_value = DEFAULT_SERVER)]
    server: String,

    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// Folder of the CLI's files [default: <config dir>/agentpmt]. The keystore is
    /// <home>/keystore/wallet.json.
    #[arg(long, global = true, env = "AGENTPMT_HOME", value_name = "DIR")]
    home: Option<PathBuf>,

    /// Keystore file, instead of <home>/keystore/wallet.json.
    #[arg(long, global = true, env = "AGENTPMT_KEYSTORE", value_name = "PATH")]
    keystore: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, import or show the local wallet.
    #[command(subcommand)]
    Wallet(wallet::WalletCommand),
    /// Show the wallet's credit balance (a signed request to the server).
    Balance,
    /// Buy credits with USDC (x402).
    #[command(subcommand)]
    Credits(credits::CreditsCommand),
    /// List, show and invoke marketplace tools.
    #[command(subcommand)]
    Tools(tools::ToolsCommand),
    /// Sign a request message and show every step: canonical payload, hash, message, signature.
    Sign(sign::SignArgs),
    /// Operator commands (needs AGENTPMT_ADMIN_TOKEN).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Published workflows and this wallet's workflow sessions.
    #[command(subcommand)]
    Workflows(workflows::WorkflowsCommand),
    /// BYO-agent workflow schedules: claim, advance, release, or work through the queue
    /// (needs AGENTPMT_BEARER_TOKEN, or AGENTPMT_API_KEY and AGENTPMT_BUDGET_KEY).
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// The jobs board: list, reserve, complete, status, or run a worker command.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Relay MCP over stdio to the server's /mcp endpoint (for stdio-only MCP clients), with
    /// the bearer from AGENTPMT_BEARER_TOKEN (or AGENTPMT_API_KEY and AGENTPMT_BUDGET_KEY).
    Mcp(mcp::McpArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.json);
    match run(cli, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            out.error(&err);
            ExitCode::from(worker::exit_status_of(&err))
        }
    }
}

fn run(cli: Cli, out: &Output) -> anyhow::Result<()> {
    let keystore = keys::keystore_path(cli.home.as_deref(), cli.keystore.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Wallet(command) => {
            drop(runtime);
            wallet::run(command, &keystore, &cli.server, out)
        }
        Command::Admin(command) => runtime.block_on(admin::run(command, &cli.server, out)),
        Command::Balance => runtime.block_on(balance::run(&cli.server, &keystore, out)),
        Command::Credits(command) => {
            runtime.block_on(credits::run(command, &cli.server, &keystore, out))
        }
        Command::Tools(command) => {
            runtime.block_on(tools::run(command, &cli.server, &keystore, out))
        }
        Command::Sign(args) => runtime.block_on(sign::run(args, &cli.server, &keystore, out)),
        Command::Workflows(command) => {
            runtime.block_on(workflows::run(command, &cli.server, &keystore, out))
        }
        Command::Schedules(command) => runtime.block_on(schedules::run(command, &cli.server, out)),
        Command::Jobs(command) => runtime.block_on(jobs::run(command, &cli.server, &keystore, out)),
        Command::Mcp(args) => runtime.block_on(mcp::run(args, &cli.server)),
    }
}
