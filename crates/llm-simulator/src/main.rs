use clap::Parser;
use llm_simulator::Behaviour;

/// An OpenAI-compatible LLM *simulator* for local runs and benchmarks (not a model).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[arg(long, env = "SIMULATOR_BIND", default_value = "127.0.0.1:8090")]
    bind: String,
    /// Delay before each answer, in ms.
    #[arg(long, env = "SIMULATOR_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Delay between stream chunks, in ms.
    #[arg(long, env = "SIMULATOR_CHUNK_DELAY_MS", default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Never report token usage.
    #[arg(long)]
    no_usage: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let listener = std::net::TcpListener::bind(&cli.bind)?;
    eprintln!("llm-simulator (not a real model) listening on http://{}/v1", listener.local_addr()?);
    let behaviour = Behaviour {
        latency_ms: cli.latency_ms,
        chunk_delay_ms: cli.chunk_delay_ms,
        report_usage: !cli.no_usage,
        ..Behaviour::default()
    };
    llm_simulator::serve(listener, behaviour, cli.workers)?.await?;
    Ok(())
}
