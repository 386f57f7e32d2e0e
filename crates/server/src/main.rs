//! `agentpmt-server`: parses configuration and runs the server until SIGINT/SIGTERM.
//! `agentpmt-server audit [flags]`: runs the payment audit against the configured database
//! and chains and exits with status 1 when it finds discrepancies (2 when it cannot run).

use agentpmt_server::config::LogFormat;
use agentpmt_server::{Server, ServerConfig};
use clap::Parser;
use tracing_subscriber::EnvFilter;

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
    match cli.config.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    if let Some(Command::Audit { config, json }) = cli.command {
        return run_audit(&config, json).await;
    }
    let server = Server::build(cli.config).await?;
    server.run_until(shutdown_signal()).await?;
    Ok(())
}

async fn run_audit(config: &ServerConfig, json: bool) -> anyhow::Result<()> {
    let report = match agentpmt_server::app::audit(config).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("agentpmt-server audit: {e}");
            std::process::exit(2);
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
    if !report.clean {
        std::process::exit(1);
    }
    Ok(())
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
