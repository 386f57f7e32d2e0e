//! `agentpmt-server`: parses configuration and runs the server until SIGINT/SIGTERM.
//! `agentpmt-server audit [flags]`: runs the payment audit against the configured database
//! and chains and exits with status 1 when it finds discrepancies (2 when it cannot run).

use agentpmt_server::config::LogFormat;
use agentpmt_server::{Server, ServerConfig};
use clap::Parser;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the C library's allocator: a request allocates and frees a few dozen
/// small buffers on whichever worker thread runs it, where glibc's arenas spent about 8% of
/// the server's CPU (see the README's performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The External Agent API server.
#[derive(Debug, Parser)]
#[command(name = "agentpmt-server", version, about)]
struct Cli {
    #[command(flatten)]
    config: ServerConfig,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Re-check every payment-derived credit and every counted on-chain payment against the
    /// database and the chains (the same configuration flags as serving), print what does
    /// not hold, and exit with status 1 when anything does not.
    Audit {
        #[command(flatten)]
        config: Box<ServerConfig>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Log lines are formatted on the request's thread and written by a thread of their own
    // through a buffer that is flushed whenever no line is waiting: one write(2) per burst of
    // lines instead of one per line. Lossless (a full queue makes loggers wait, it never
    // drops lines); the guard flushes what is left at exit.
    let ansi = std::io::stdout().is_terminal();
    let (writer, log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let logs = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(ansi);
    match cli.config.log_format {
        LogFormat::Text => logs.with_env_filter(filter).init(),
        LogFormat::Json => logs.json().with_env_filter(filter).init(),
    }
    if let Some(Command::Audit { config, json }) = cli.command {
        let status = run_audit(&config, json).await?;
        if status != 0 {
            drop(log_guard);
            std::process::exit(status);
        }
        return Ok(());
    }
    let server = Server::build(cli.config).await?;
    server.run_until(shutdown_signal()).await?;
    Ok(())
}

/// Runs the audit and prints its report; the exit status: 0 clean, 1 discrepancies, 2 the
/// audit could not run.
async fn run_audit(config: &ServerConfig, json: bool) -> anyhow::Result<i32> {
    let report = match agentpmt_server::app::audit(config).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("agentpmt-server audit: {e}");
            return Ok(2);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "payment audit: {} ledger entries, {} claimed payments ({} re-read on chain), {} open settlements, {} credits purchased",
            report.ledger_entries,
            report.claims,
            report.checked_on_chain,
            report.open_settlements,
            report.credits_purchased
        );
        for d in &report.discrepancies {
            println!("DISCREPANCY {} {}: {}", d.kind, d.reference, d.detail);
        }
        println!(
            "{}",
            if report.clean {
                "clean: every credit has exactly one on-chain payment at depth"
            } else {
                "NOT CLEAN: see the discrepancies above and the README (Payment audit)"
            }
        );
    }
    Ok(if report.clean { 0 } else { 1 })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
