use std::path::PathBuf;

use api_gateway::GatewaySettings;
use clap::{Parser, Subcommand};
use common_models::db::{self, Database};

/// The allocator: mimalloc (version 2), as in every service but cv-processor (see the
/// README's ingest benchmark; under mimalloc, cv-processor's sandbox test bomb no longer
/// ended at the extraction child's address-space limit), keeping freed memory for a
/// second ([`service_kit::allocator`]).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Exit 1 naming each environment variable that is not a setting of this service
    /// (misspelt, renamed, or meant for another), 0 when there is none.
    CheckEnv,
    /// Create a demo company with a month of LLM traffic (published to the queue for
    /// llm-log-worker), for a dashboard full at once. Running it again the same day adds
    /// nothing.
    Demo {
        #[arg(long, default_value = "Demo Recruiting")]
        company: String,
        /// IANA timezone of a company created now.
        #[arg(long, default_value = "Europe/Berlin")]
        timezone: String,
        /// The owner's email; the other people get addresses at the same domain.
        #[arg(long, default_value = "owner@demo.example.com")]
        owner_email: String,
        /// Everyone's password.
        #[arg(long, env = "DEMO_PASSWORD", default_value = "demo passphrase")]
        password: String,
        /// Days of traffic, today included.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Calls on a weekday (a weekend day has a fifth).
        #[arg(long, default_value_t = 600)]
        calls_per_day: u32,
        /// CVs uploaded over the period, for cv-processor (a few of them broken).
        #[arg(long, default_value_t = 60)]
        cvs: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::allocator::keep_freed_memory();
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
        Command::CheckEnv => service_kit::config::check_env(api_gateway::settings::DEFAULTS, &["DEMO_PASSWORD"]),
        Command::Demo { company, timezone, owner_email, password, days, calls_per_day, cvs } => {
            let options =
                api_gateway::demo::DemoOptions { company, timezone, owner_email, password, days, calls_per_day, cvs };
            let outcome = api_gateway::demo::seed(&settings, &options).await?;
            println!(
                "demo company #{} ({}): {} calls published for llm-log-worker, {} CVs queued for cv-processor{}; \
                 sign in as {} at /dashboard",
                outcome.company_id,
                if outcome.created { "created" } else { "already there" },
                outcome.events,
                outcome.cvs,
                if outcome.dropped > 0 { format!(", {} dropped", outcome.dropped) } else { String::new() },
                options.owner_email,
            );
            anyhow::ensure!(outcome.dropped == 0, "{} events were dropped", outcome.dropped);
            Ok(())
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
