//! The `dead-letters` subcommand every consumer binary offers.

use crate::dead_letters::{self, Selection};
use crate::keys::Keys;

#[derive(Debug, clap::Subcommand)]
pub enum DeadLetterCommand {
    /// Print dead letters, oldest first, one JSON object a line.
    List {
        /// Only this stream (default: every stream of this consumer).
        #[arg(long)]
        stream: Option<String>,
        /// At most this many per stream.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Put dead letters back on their stream, to be consumed again.
    Replay {
        #[command(flatten)]
        which: Which,
    },
    /// Delete dead letters for good.
    Drop {
        #[command(flatten)]
        which: Which,
    },
}

#[derive(Debug, clap::Args)]
pub struct Which {
    /// These letters (their ids in the dead-letter stream); needs --stream.
    #[arg(long = "id", requires = "stream", conflicts_with = "all", required_unless_present = "all")]
    ids: Vec<String>,
    /// Every letter present now.
    #[arg(long)]
    all: bool,
    /// Only this stream (default with --all: every stream of this consumer).
    #[arg(long)]
    stream: Option<String>,
}

/// Runs `command` against the queue Redis at `redis_url`, for a consumer of `streams`.
pub async fn run(command: DeadLetterCommand, redis_url: &str, keys: &Keys, streams: &[&str]) -> anyhow::Result<()> {
    let chosen = |stream: &Option<String>| -> anyhow::Result<Vec<String>> {
        match stream {
            Some(s) if streams.contains(&s.as_str()) => Ok(vec![s.clone()]),
            Some(s) => anyhow::bail!("unknown stream {s:?}; this consumer reads {}", streams.join(", ")),
            None => Ok(streams.iter().map(|s| (*s).to_owned()).collect()),
        }
    };
    let mut conn =
        service_kit::redis::Endpoint::parse(redis_url)?.primary().await?.get_multiplexed_async_connection().await?;
    match command {
        DeadLetterCommand::List { stream, limit } => {
            for stream in chosen(&stream)? {
                for letter in dead_letters::list(&mut conn, keys, &stream, limit).await? {
                    println!("{}", serde_json::to_string(&letter)?);
                }
            }
        }
        DeadLetterCommand::Replay { which } => {
            let selection = if which.all { Selection::All } else { Selection::Ids(which.ids) };
            for stream in chosen(&which.stream)? {
                let moved = dead_letters::replay(&mut conn, keys, &stream, &selection).await?;
                println!("{stream}: {moved} dead letters replayed");
            }
        }
        DeadLetterCommand::Drop { which } => {
            let selection = if which.all { Selection::All } else { Selection::Ids(which.ids) };
            for stream in chosen(&which.stream)? {
                let deleted = dead_letters::drop_letters(&mut conn, keys, &stream, &selection).await?;
                println!("{stream}: {deleted} dead letters dropped");
            }
        }
    }
    Ok(())
}
