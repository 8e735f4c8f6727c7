//! The binary framing of cache-service's batch operations, shared by the service and
//! its client. Values are raw bytes (an embedding is a packed f32 array), so batches are
//! framed with big-endian u32 lengths instead of being forced through JSON:
//!
//! - batch get answer: for each requested key, in order, `len: u32` then `len` bytes;
//!   `len = 0xFFFF_FFFF` (and no bytes) marks a miss.
//! - batch put body: for each entry, `key_len: u32`, the key, `value_len: u32`, the value.

/// Length marker of a missing value.
pub const MISS: u32 = u32::MAX;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    #[error("truncated frame at byte {0}")]
    Truncated(usize),
    #[error("value of {0} bytes is too large to frame")]
    TooLarge(usize),
    #[error("key at byte {0} is not UTF-8")]
    KeyNotUtf8(usize),
    #[error("more than {0} entries")]
    TooManyEntries(usize),
}

fn push_len(out: &mut Vec<u8>, len: usize) -> Result<(), FrameError> {
    let len32 = u32::try_from(len).ok().filter(|l| *l != MISS).ok_or(FrameError::TooLarge(len))?;
    out.extend_from_slice(&len32.to_be_bytes());
    Ok(())
}

fn read_len(buf: &[u8], at: usize) -> Result<u32, FrameError> {
    let bytes: [u8; 4] = buf.get(at..at + 4).and_then(|b| b.try_into().ok()).ok_or(FrameError::Truncated(at))?;
    Ok(u32::from_be_bytes(bytes))
}

fn read_bytes(buf: &[u8], at: usize, len: usize) -> Result<&[u8], FrameError> {
    buf.get(at..at + len).ok_or(FrameError::Truncated(at))
}

/// Frames the answer to a batch get.
pub fn encode_values<V: AsRef<[u8]>>(values: &[Option<V>]) -> Result<Vec<u8>, FrameError> {
    let size: usize = values.iter().map(|v| 4 + v.as_ref().map_or(0, |v| v.as_ref().len())).sum();
    let mut out = Vec::with_capacity(size);
    for v in values {
        match v {
            Some(v) => {
                push_len(&mut out, v.as_ref().len())?;
                out.extend_from_slice(v.as_ref());
            }
            None => out.extend_from_slice(&MISS.to_be_bytes()),
        }
    }
    Ok(out)
}

/// Reads the answer to a batch get.
pub fn decode_values(buf: &[u8]) -> Result<Vec<Option<Vec<u8>>>, FrameError> {
    let mut values = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let len = read_len(buf, at)?;
        at += 4;
        if len == MISS {
            values.push(None);
        } else {
            let len = len as usize;
            values.push(Some(read_bytes(buf, at, len)?.to_vec()));
            at += len;
        }
    }
    Ok(values)
}

/// Frames a batch put body.
pub fn encode_entries<K: AsRef<str>, V: AsRef<[u8]>>(entries: &[(K, V)]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    for (k, v) in entries {
        push_len(&mut out, k.as_ref().len())?;
        out.extend_from_slice(k.as_ref().as_bytes());
        push_len(&mut out, v.as_ref().len())?;
        out.extend_from_slice(v.as_ref());
    }
    Ok(out)
}

/// Reads a batch put body of at most `max_entries` entries, stopping at the first one
/// beyond (a body of tiny entries must not cost millions of allocations to refuse).
pub fn decode_entries(buf: &[u8], max_entries: usize) -> Result<Vec<(String, &[u8])>, FrameError> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        if entries.len() == max_entries {
            return Err(FrameError::TooManyEntries(max_entries));
        }
        let key_len = read_len(buf, at)? as usize;
        at += 4;
        let key = std::str::from_utf8(read_bytes(buf, at, key_len)?).map_err(|_| FrameError::KeyNotUtf8(at))?;
        at += key_len;
        let value_len = read_len(buf, at)? as usize;
        at += 4;
        let value = read_bytes(buf, at, value_len)?;
        at += value_len;
        entries.push((key.to_owned(), value));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_round_trip_and_truncation_is_caught() {
        let values = vec![Some(vec![0u8, 255, 10]), None, Some(vec![])];
        let framed = encode_values(&values).unwrap();
        assert_eq!(decode_values(&framed).unwrap(), values);
        assert!(matches!(decode_values(&framed[..5]), Err(FrameError::Truncated(_))));

        let entries = vec![("a", vec![1u8, 2]), ("émbed", vec![0u8; 3])];
        let framed = encode_entries(&entries).unwrap();
        let back = decode_entries(&framed, 2).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[1].0.as_str(), back[1].1), ("émbed", &[0u8, 0, 0][..]));
        assert!(decode_entries(&framed[..framed.len() - 1], 2).is_err());
        assert_eq!(decode_entries(&framed, 1), Err(FrameError::TooManyEntries(1)));
    }
}
