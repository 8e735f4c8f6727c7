use std::path::PathBuf;

use cache_service::CacheSettings;
use clap::{Parser, Subcommand};

/// The allocator: mimalloc (version 2), as in every service but cv-processor (see the
/// README's ingest benchmark; under mimalloc, cv-processor's sandbox test bomb no longer
/// ended at the extraction child's address-space limit), keeping freed memory for a
/// second ([`service_kit::allocator`]).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The headhunter cache: namespaced, two-tier, shared by every service.
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
    /// Serve the cache API (the default).
    Serve,
    /// Exit 0 when this service's /healthz answers.
    Healthcheck,
    /// Exit 1 naming each environment variable that is not a setting of this service
    /// (misspelt, renamed, or meant for another), 0 when there is none.
    CheckEnv,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let settings = CacheSettings::load(cli.config.as_deref(), service_kit::config::process_env())?;
    service_kit::telemetry::init_tracing(&settings.logging);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = std::net::TcpListener::bind((settings.server.bind_host.as_str(), settings.server.port))?;
            cache_service::run(settings, listener, service_kit::telemetry::shutdown_signal()).await
        }
        Command::Healthcheck => service_kit::telemetry::healthcheck(settings.server.port).await,
        Command::CheckEnv => service_kit::config::check_env(
            cache_service::settings::DEFAULTS,
            &[cache_service::settings::CACHE_REDIS_URL],
        ),
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
