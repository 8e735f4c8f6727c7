use std::path::PathBuf;

use clap::{Parser, Subcommand};
use common_models::db::{self, Database};
use common_models::events::LogEvent;
use llm_log_worker::WorkerSettings;
use task_queue::cli::DeadLetterCommand;
use task_queue::{Keys, Message};

/// Writes LLM and API logs from the Redis streams to the analytics database.
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
    /// Consume the log streams (the default).
    Serve,
    /// Apply the analytics database migrations and exit.
    Migrate,
    /// Exit 0 when this worker's /healthz answers.
    Healthcheck,
    /// List, replay or drop the log streams' dead letters.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = WorkerSettings::load(cli.config.as_deref(), service_kit::config::process_env())?;
    service_kit::telemetry::init_tracing(&settings.logging);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = std::net::TcpListener::bind((settings.server.bind_host.as_str(), settings.server.port))?;
            llm_log_worker::run(settings, listener, service_kit::telemetry::shutdown_signal()).await
        }
        Command::Migrate => {
            let applied = db::run_migrations(settings.analytics_url().expose(), Database::Analytics).await?;
            tracing::info!(versions = ?applied, "analytics migrations applied");
            Ok(())
        }
        Command::Healthcheck => service_kit::telemetry::healthcheck(settings.server.port).await,
        Command::DeadLetters(command) => {
            let keys = Keys::new(settings.redis.key_prefix.clone());
            task_queue::cli::run(command, settings.redis.url.expose(), &keys, &LogEvent::streams()).await
        }
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
