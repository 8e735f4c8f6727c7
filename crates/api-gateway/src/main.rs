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
    let settings = GatewaySettings::load(cli.config.as_deref(), common_models::settings::process_env())?;
    common_models::telemetry::init_tracing(settings.log_format == "json", &settings.log_level);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = std::net::TcpListener::bind((settings.bind_host.as_str(), settings.port))?;
            api_gateway::run(settings, listener, common_models::telemetry::shutdown_signal()).await
        }
        Command::Migrate => {
            let applied = db::run_migrations(&settings.database_url, Database::Main).await?;
            tracing::info!(versions = ?applied, "main migrations applied");
            Ok(())
        }
        Command::Healthcheck => common_models::telemetry::healthcheck(settings.port).await,
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
