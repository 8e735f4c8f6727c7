use std::path::PathBuf;

use clap::{Parser, Subcommand};
use common_models::cv::ProcessCv;
use cv_processor::ProcessorSettings;
use cv_processor::extract::Limits;
use task_queue::cli::DeadLetterCommand;
use task_queue::{Keys, Message};

/// Processes uploaded CVs from the cv_jobs stream.
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
    /// Consume the cv_jobs stream (the default).
    Serve,
    /// Exit 0 when this processor's /healthz answers.
    Healthcheck,
    /// Exit 1 naming each environment variable that is not a setting of this service
    /// (misspelt, renamed, or meant for another), 0 when there is none.
    CheckEnv,
    /// List, replay or drop the cv_jobs stream's dead letters.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// Internal: read one file from stdin under resource limits and print its text as
    /// JSON (the sandboxed child the service runs for every CV).
    #[command(hide = true)]
    Extract {
        #[arg(long)]
        memory: u64,
        #[arg(long)]
        cpu_secs: u64,
        /// The extraction limits, as JSON.
        #[arg(long)]
        limits: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The sandboxed child starts nothing else: no settings, no runtime, no logging.
    if let Some(Command::Extract { memory, cpu_secs, limits }) = &cli.command {
        let limits: Limits = serde_json::from_str(limits)?;
        return cv_processor::sandbox::run_child(*memory, *cpu_secs, &limits);
    }
    let settings = ProcessorSettings::load(cli.config.as_deref(), service_kit::config::process_env())?;
    service_kit::telemetry::init_tracing(&settings.logging);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve | Command::Extract { .. } => {
                let listener = std::net::TcpListener::bind((settings.server.bind_host.as_str(), settings.server.port))?;
                cv_processor::run(settings, listener, service_kit::telemetry::shutdown_signal()).await
            }
            Command::Healthcheck => service_kit::telemetry::healthcheck(settings.server.port).await,
            Command::CheckEnv => {
                service_kit::config::check_env(cv_processor::settings::DEFAULTS, &["RAYON_NUM_THREADS"])
            }
            Command::DeadLetters(command) => {
                let keys = Keys::new(settings.redis.key_prefix.clone());
                task_queue::cli::run(command, settings.redis.url.expose(), &keys, &ProcessCv::streams()).await
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
