use std::path::PathBuf;

use api_gateway::GatewaySettings;
use clap::{Parser, Subcommand};
use common_models::db::{self, Database};

/// The headhunter public API.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Settings file (TOML) layered between the defaults and the environment.
    #[arg(long, global = true, env = "HEADHUNTER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply the main database migrations and exit.
    Migrate,
    /// Exit 0 when this gateway's /healthz answers.
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = GatewaySettings::load(cli.config.as_deref(), service_kit::config::process_env())?;
    service_kit::telemetry::init_tracing(&settings.logging);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = std::net::TcpListener::bind((settings.server.bind_host.as_str(), settings.server.port))?;
            api_gateway::run(settings, listener, service_kit::telemetry::shutdown_signal()).await
        }
        Command::Migrate => {
            let applied = db::run_migrations(settings.database.url.expose(), Database::Main).await?;
            tracing::info!(versions = ?applied, "main migrations applied");
            Ok(())
        }
        Command::Healthcheck => service_kit::telemetry::healthcheck(settings.server.port).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
