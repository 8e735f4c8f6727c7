//! What travels on a stream: typed tasks, encoded as a type tag and a JSON payload.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The entry field that names the payload's type and version (`llm_call.v1`).
pub const TYPE_FIELD: &str = "type";
/// The entry field that holds the payload as JSON.
pub const PAYLOAD_FIELD: &str = "payload";

/// A message type carried on one stream. The tag names the type and its version, so a
/// new shape can be introduced as `llm_call.v2` while old entries still decode: readers
/// refuse (dead-letter) tags they do not know instead of guessing.
pub trait Task: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stream it travels on, without the key prefix.
    const STREAM: &'static str;
    /// Type and version, as `<type>.v<version>`.
    const TYPE_TAG: &'static str;
}

/// What a consumer reads: one task type, or an enum over several (possibly on several
/// streams) that decodes each entry by its stream and tag.
pub trait Message: Sized + Send + Sync + 'static {
    /// The streams a consumer of this message reads.
    fn streams() -> Vec<&'static str>;
    fn decode(stream: &str, tag: &[u8], payload: &[u8]) -> Result<Self, DecodeError>;
}

impl<T: Task> Message for T {
    fn streams() -> Vec<&'static str> {
        vec![T::STREAM]
    }

    fn decode(_stream: &str, tag: &[u8], payload: &[u8]) -> Result<Self, DecodeError> {
        decode_as::<T>(tag, payload)
    }
}

/// Decodes `payload` as `T` if `tag` is `T`'s.
pub fn decode_as<T: Task>(tag: &[u8], payload: &[u8]) -> Result<T, DecodeError> {
    if tag != T::TYPE_TAG.as_bytes() {
        return Err(DecodeError::UnknownType(String::from_utf8_lossy(tag).into_owned()));
    }
    serde_json::from_slice(payload).map_err(|source| DecodeError::Invalid { tag: T::TYPE_TAG, source })
}

/// Why a stream entry could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("entry has no `{0}` field")]
    MissingField(&'static str),
    #[error("unknown type tag {0:?}")]
    UnknownType(String),
    #[error("invalid {tag} payload: {source}")]
    Invalid { tag: &'static str, source: serde_json::Error },
}

/// An encoded entry: what is added to a stream, or kept in the spool until it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub stream: Cow<'static, str>,
    pub tag: Cow<'static, str>,
    pub payload: Bytes,
}

/// What an entry costs beyond its fields, in buffers and in the spool.
const ENTRY_OVERHEAD: usize = 48;

impl Entry {
    pub fn encode<T: Task>(task: &T) -> Result<Self, serde_json::Error> {
        Ok(Self {
            stream: Cow::Borrowed(T::STREAM),
            tag: Cow::Borrowed(T::TYPE_TAG),
            payload: Bytes::from(serde_json::to_vec(task)?),
        })
    }

    /// The bytes this entry is counted as against the producer's bounds.
    pub fn weight(&self) -> usize {
        self.payload.len() + self.stream.len() + self.tag.len() + ENTRY_OVERHEAD
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Ping {
        n: u32,
    }

    impl Task for Ping {
        const STREAM: &'static str = "pings";
        const TYPE_TAG: &'static str = "ping.v1";
    }

    #[test]
    fn tasks_round_trip_and_foreign_tags_are_refused() {
        let entry = Entry::encode(&Ping { n: 7 }).unwrap();
        assert_eq!((entry.stream.as_ref(), entry.tag.as_ref()), ("pings", "ping.v1"));
        assert_eq!(Ping::decode("pings", b"ping.v1", &entry.payload).unwrap(), Ping { n: 7 });
        assert!(matches!(Ping::decode("pings", b"ping.v2", &entry.payload), Err(DecodeError::UnknownType(_))));
        assert!(matches!(Ping::decode("pings", b"ping.v1", b"{}"), Err(DecodeError::Invalid { .. })));
        assert_eq!(<Ping as Message>::streams(), vec!["pings"]);
    }
}
