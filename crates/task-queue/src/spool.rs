//! The producer's disk spool: where entries go while Redis does not take them, so that
//! an outage, and a restart during one, loses nothing the producer accepted.
//!
//! A directory holds numbered segment files (`0000000000000001.spool`, …) written
//! append-only, a `cursor` file naming the next record to replay (segment and offset),
//! and a `lock` file held exclusively by the process using the spool, so two processes
//! never share one.
//!
//! A record is `len: u32 LE`, `crc32(body): u32 LE`, then the body: `stream_len: u8`,
//! the stream name, `tag_len: u8`, the type tag, and the JSON payload. Records are
//! replayed in the order they were written; a segment is deleted once all of it is
//! replayed, and the whole spool is reset when it is empty.
//!
//! Crash safety: a process killed mid-append leaves a torn last record. Opening the spool
//! checks every unreplayed record's length and checksum and cuts the segment at the
//! first bad one (counted as `torn` at the end of the newest segment, `corrupt`
//! elsewhere), so garbage is never replayed and everything before the cut is. The
//! cursor is rewritten (write, then rename) after each replayed chunk; a crash between
//! the chunk reaching Redis and the cursor moving replays that chunk again, which
//! consumers absorb (their writes are idempotent on the event id).
//!
//! Durability (`Fsync`): `Always` syncs after every append (an acknowledged entry
//! survives a power cut); `Every(d)` syncs at most every `d` (the default, 1 s: a power
//! cut loses at most that much; a killed process loses nothing, the kernel holds what
//! was written); `Never` leaves it to the kernel.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::task::Entry;

/// Record header: length and checksum of the body.
const HEADER: u64 = 8;
/// A length above this is garbage, not a record.
const MAX_BODY: u32 = 64 << 20;
const SEGMENT_SUFFIX: &str = ".spool";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    Always,
    Every(Duration),
    Never,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Bytes on disk beyond which appends are refused (and counted as dropped).
    pub max_bytes: u64,
    /// A new segment is started beyond this size; fully replayed segments are deleted.
    pub segment_bytes: u64,
    pub fsync: Fsync,
}

/// A place in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    seq: u64,
    offset: u64,
}

/// Bytes cut away because they did not hold valid records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    /// `torn` (the end of the newest segment: a write cut short) or `corrupt`.
    pub reason: &'static str,
}

/// Entries read for replay, and where the cursor goes once they are in Redis.
#[derive(Debug)]
pub struct Chunk {
    pub entries: Vec<Entry>,
    pub end: ChunkEnd,
    pub discarded: Vec<Discarded>,
}

/// Where a chunk ends: what [`Spool::commit`] needs once the chunk is in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEnd {
    position: Position,
    records: u64,
    /// Nothing was left behind it.
    at_end: bool,
}

impl ChunkEnd {
    /// The chunk reached the end of the spool: committing it empties the spool.
    pub fn is_last(&self) -> bool {
        self.at_end
    }
}

#[derive(Debug)]
pub struct Spool {
    config: SpoolConfig,
    _lock: File,
    /// Segments on disk, oldest first: (sequence number, bytes).
    segments: VecDeque<(u64, u64)>,
    /// The newest segment, open for appending.
    tail: Option<File>,
    /// The next record to replay.
    cursor: Position,
    /// A segment open for reading, and the position it is at.
    reader: Option<(Position, BufReader<File>)>,
    /// Records not yet replayed.
    entries: u64,
    last_sync: Instant,
    unsynced: bool,
}

impl Spool {
    /// Opens (or creates) the spool in `config.dir`, checking every unreplayed record;
    /// returns it with what had to be cut away.
    pub fn open(config: SpoolConfig) -> io::Result<(Self, Vec<Discarded>)> {
        fs::create_dir_all(&config.dir)?;
        let lock = lock_dir(&config.dir)?;
        let mut seqs: Vec<u64> = fs::read_dir(&config.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name().to_str()?.strip_suffix(SEGMENT_SUFFIX).and_then(|s| u64::from_str_radix(s, 16).ok())
            })
            .collect();
        seqs.sort_unstable();
        let mut cursor = read_cursor(&config.dir)
            .filter(|c| seqs.contains(&c.seq))
            .unwrap_or(Position { seq: seqs.first().copied().unwrap_or(1), offset: 0 });
        // Segments before the cursor's were replayed before a crash kept them on disk.
        for seq in seqs.iter().filter(|s| **s < cursor.seq) {
            fs::remove_file(segment_path(&config.dir, *seq))?;
        }
        seqs.retain(|s| *s >= cursor.seq);

        let mut spool = Self {
            config,
            _lock: lock,
            segments: VecDeque::new(),
            tail: None,
            cursor,
            reader: None,
            entries: 0,
            last_sync: Instant::now(),
            unsynced: false,
        };
        let mut discarded = Vec::new();
        let last = seqs.last().copied();
        for seq in seqs {
            let path = segment_path(&spool.config.dir, seq);
            let len = fs::metadata(&path)?.len();
            let start = if seq == cursor.seq { cursor.offset.min(len) } else { 0 };
            let (records, valid_end) = scan(&path, start)?;
            if valid_end < len {
                let reason = if Some(seq) == last { "torn" } else { "corrupt" };
                OpenOptions::new().write(true).open(&path)?.set_len(valid_end)?;
                discarded.push(Discarded { segment: path, offset: valid_end, bytes: len - valid_end, reason });
            }
            spool.entries += records;
            spool.segments.push_back((seq, valid_end));
        }
        if seq_is_past_end(&spool, cursor) {
            cursor.offset = spool.segments.front().map_or(0, |s| s.1);
            spool.cursor = cursor;
        }
        if spool.entries == 0 {
            spool.reset()?;
        }
        Ok((spool, discarded))
    }

    /// Records waiting to be replayed.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Bytes the segments take on disk (replayed records count until their segment goes).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.1).sum()
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Appends `entries` in order, as many as the size bound allows; returns the ones it
    /// refused (the spool is full). On an I/O error nothing of this call is kept.
    pub fn append(&mut self, entries: Vec<Entry>) -> io::Result<Vec<Entry>> {
        let mut budget = self.config.max_bytes.saturating_sub(self.bytes());
        let mut iter = entries.into_iter();
        let mut refused = Vec::new();
        let mut buf = Vec::new();
        let mut in_buf = 0u64;
        for entry in iter.by_ref() {
            let Some(record) = encode_record(&entry) else {
                // A stream name or tag over 255 bytes cannot be framed; it could not be
                // a real one either.
                refused.push(entry);
                continue;
            };
            let size = record.len() as u64;
            if size > budget {
                refused.push(entry);
                break;
            }
            let tail_len = self.segments.back().map_or(0, |s| s.1);
            if tail_len + buf.len() as u64 + size > self.config.segment_bytes && tail_len + buf.len() as u64 > 0 {
                self.write_to_tail(&buf, in_buf)?;
                buf.clear();
                in_buf = 0;
                self.roll()?;
            }
            buf.extend_from_slice(&record);
            in_buf += 1;
            budget -= size;
        }
        refused.extend(iter);
        self.write_to_tail(&buf, in_buf)?;
        self.maybe_sync()?;
        Ok(refused)
    }

    fn write_to_tail(&mut self, buf: &[u8], records: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.segments.is_empty() {
            self.segments.push_back((self.cursor.seq, 0));
        }
        let (seq, len) = self.segments.back().copied().unwrap_or((self.cursor.seq, 0));
        if self.tail.is_none() {
            let file = OpenOptions::new().create(true).append(true).open(segment_path(&self.config.dir, seq))?;
            self.tail = Some(file);
        }
        let Some(tail) = self.tail.as_mut() else { return Err(io::Error::other("no tail segment")) };
        if let Err(err) = tail.write_all(buf) {
            // Take back whatever part of the write landed, so no torn record sits
            // before the next append.
            drop(tail.set_len(len));
            return Err(err);
        }
        if let Some(back) = self.segments.back_mut() {
            back.1 += buf.len() as u64;
        }
        self.entries += records;
        self.unsynced = true;
        Ok(())
    }

    /// Starts the next segment.
    fn roll(&mut self) -> io::Result<()> {
        self.sync()?;
        let next = self.segments.back().map_or(self.cursor.seq, |s| s.0 + 1);
        self.segments.push_back((next, 0));
        self.tail = None;
        Ok(())
    }

    fn maybe_sync(&mut self) -> io::Result<()> {
        match self.config.fsync {
            Fsync::Always => self.sync(),
            Fsync::Every(every) if self.last_sync.elapsed() >= every => self.sync(),
            _ => Ok(()),
        }
    }

    /// Flushes appended records to the disk.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced
            && let Some(tail) = &self.tail
        {
            tail.sync_data()?;
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Reads up to `max_entries` records (or about `max_bytes`) from the cursor on,
    /// without moving it: [`Spool::commit`] does, once they are in Redis.
    pub fn read_chunk(&mut self, max_entries: usize, max_bytes: usize) -> io::Result<Chunk> {
        let mut pos = self.cursor;
        let mut entries = Vec::new();
        let mut discarded = Vec::new();
        let mut bytes = 0usize;
        let mut at_end = false;
        loop {
            let Some(segment_len) = self.segment_len(pos.seq) else {
                at_end = true;
                break;
            };
            if pos.offset >= segment_len {
                match self.segments.iter().find(|s| s.0 > pos.seq) {
                    Some(next) => {
                        pos = Position { seq: next.0, offset: 0 };
                        continue;
                    }
                    None => {
                        at_end = true;
                        break;
                    }
                }
            }
            if entries.len() >= max_entries || bytes >= max_bytes {
                break;
            }
            match self.read_record(pos)? {
                Some((entry, size)) => {
                    bytes += size as usize;
                    pos.offset += size;
                    entries.push(entry);
                }
                None => {
                    // Damaged on disk since it was checked: skip the rest of the segment.
                    let path = segment_path(&self.config.dir, pos.seq);
                    let (at, lost) = (pos.offset, segment_len - pos.offset);
                    if self.segments.back().map(|s| s.0) == Some(pos.seq) {
                        // The newest segment: cut it, so appends do not land behind garbage.
                        OpenOptions::new().write(true).open(&path)?.set_len(pos.offset)?;
                        if let Some(back) = self.segments.back_mut() {
                            back.1 = pos.offset;
                        }
                        self.tail = None;
                    } else {
                        pos.offset = segment_len;
                    }
                    discarded.push(Discarded { segment: path, offset: at, bytes: lost, reason: "corrupt" });
                    self.reader = None;
                }
            }
        }
        let records = entries.len() as u64;
        Ok(Chunk { entries, end: ChunkEnd { position: pos, records, at_end }, discarded })
    }

    fn segment_len(&self, seq: u64) -> Option<u64> {
        self.segments.iter().find(|s| s.0 == seq).map(|s| s.1)
    }

    fn read_record(&mut self, pos: Position) -> io::Result<Option<(Entry, u64)>> {
        let reader = match self.reader.take() {
            Some((at, reader)) if at == pos => reader,
            Some((at, mut reader)) if at.seq == pos.seq => {
                reader.seek(SeekFrom::Start(pos.offset))?;
                reader
            }
            _ => {
                let mut file = File::open(segment_path(&self.config.dir, pos.seq))?;
                file.seek(SeekFrom::Start(pos.offset))?;
                BufReader::with_capacity(256 << 10, file)
            }
        };
        let mut reader = reader;
        let Some((entry, size)) = read_one(&mut reader)? else {
            return Ok(None);
        };
        self.reader = Some((Position { seq: pos.seq, offset: pos.offset + size }, reader));
        Ok(Some((entry, size)))
    }

    /// Moves the cursor past a chunk that reached Redis; deletes segments wholly behind
    /// it, and resets the spool when nothing is left behind the chunk.
    pub fn commit(&mut self, end: ChunkEnd) -> io::Result<()> {
        if end.at_end {
            // Counted records that turned out damaged are gone with the rest.
            return self.reset();
        }
        self.cursor = end.position;
        self.entries = self.entries.saturating_sub(end.records);
        while let Some(front) = self.segments.front().copied() {
            if front.0 >= end.position.seq {
                break;
            }
            self.segments.pop_front();
            remove_if_present(&segment_path(&self.config.dir, front.0))?;
        }
        write_cursor(&self.config.dir, self.cursor)
    }

    /// Deletes every segment and starts afresh after the newest sequence number.
    fn reset(&mut self) -> io::Result<()> {
        let next = self.segments.back().map_or(self.cursor.seq, |s| s.0 + 1);
        self.tail = None;
        self.reader = None;
        for (seq, _) in self.segments.drain(..) {
            remove_if_present(&segment_path(&self.config.dir, seq))?;
        }
        self.entries = 0;
        self.cursor = Position { seq: next, offset: 0 };
        write_cursor(&self.config.dir, self.cursor)
    }
}

fn seq_is_past_end(spool: &Spool, cursor: Position) -> bool {
    spool.segments.front().is_some_and(|s| s.0 == cursor.seq && cursor.offset > s.1)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}{SEGMENT_SUFFIX}"))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

fn lock_dir(dir: &Path) -> io::Result<File> {
    let path = dir.join("lock");
    let mut file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            drop(file.read_to_string(&mut holder));
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("spool directory {} is in use by another process (pid {})", dir.display(), holder.trim()),
            ));
        }
        Err(fs::TryLockError::Error(err)) => return Err(err),
    }
    file.set_len(0)?;
    file.write_all(std::process::id().to_string().as_bytes())?;
    Ok(file)
}

fn read_cursor(dir: &Path) -> Option<Position> {
    let text = fs::read_to_string(dir.join("cursor")).ok()?;
    let mut parts = text.split_whitespace();
    let seq = u64::from_str_radix(parts.next()?, 16).ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some(Position { seq, offset })
}

fn write_cursor(dir: &Path, cursor: Position) -> io::Result<()> {
    let tmp = dir.join("cursor.tmp");
    fs::write(&tmp, format!("{:016x} {}\n", cursor.seq, cursor.offset))?;
    fs::rename(tmp, dir.join("cursor"))
}

fn encode_record(entry: &Entry) -> Option<Vec<u8>> {
    let stream_len = u8::try_from(entry.stream.len()).ok()?;
    let tag_len = u8::try_from(entry.tag.len()).ok()?;
    let body_len = 2 + entry.stream.len() + entry.tag.len() + entry.payload.len();
    let body_len32 = u32::try_from(body_len).ok().filter(|n| *n <= MAX_BODY)?;
    let mut record = Vec::with_capacity(HEADER as usize + body_len);
    record.extend_from_slice(&body_len32.to_le_bytes());
    record.extend_from_slice(&[0; 4]);
    record.push(stream_len);
    record.extend_from_slice(entry.stream.as_bytes());
    record.push(tag_len);
    record.extend_from_slice(entry.tag.as_bytes());
    record.extend_from_slice(&entry.payload);
    let crc = crc32fast::hash(&record[HEADER as usize..]);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    Some(record)
}

/// Reads the record at the reader's position; `None` when what is there is not a
/// whole valid record (cut short, bad length, bad checksum, bad framing).
fn read_one(reader: &mut impl Read) -> io::Result<Option<(Entry, u64)>> {
    let mut header = [0u8; HEADER as usize];
    if !read_full(reader, &mut header)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(2..=MAX_BODY).contains(&len) {
        return Ok(None);
    }
    let mut body = vec![0u8; len as usize];
    if !read_full(reader, &mut body)? || crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    Ok(decode_body(body).map(|entry| (entry, HEADER + u64::from(len))))
}

fn decode_body(body: Vec<u8>) -> Option<Entry> {
    let body = Bytes::from(body);
    let stream_len = usize::from(*body.first()?);
    let stream = std::str::from_utf8(body.get(1..1 + stream_len)?).ok()?.to_owned();
    let tag_at = 1 + stream_len;
    let tag_len = usize::from(*body.get(tag_at)?);
    let tag = std::str::from_utf8(body.get(tag_at + 1..tag_at + 1 + tag_len)?).ok()?.to_owned();
    let payload = body.slice(tag_at + 1 + tag_len..);
    Some(Entry { stream: stream.into(), tag: tag.into(), payload })
}

/// Fills `buf`; false when the data ends first.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(true)
}

/// Counts the valid records of a segment from `start`; returns (records, end of the
/// last valid one).
fn scan(path: &Path, start: u64) -> io::Result<(u64, u64)> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut records = 0;
    let mut end = start;
    while let Some((_, size)) = read_one(&mut reader)? {
        records += 1;
        end += size;
    }
    Ok((records, end))
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn config(dir: &Path) -> SpoolConfig {
        SpoolConfig { dir: dir.to_owned(), max_bytes: 1 << 20, segment_bytes: 4096, fsync: Fsync::Never }
    }

    fn entry(i: usize) -> Entry {
        Entry {
            stream: "llm_logs".into(),
            tag: "llm_call.v1".into(),
            payload: Bytes::from(format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 50))),
        }
    }

    fn drain(spool: &mut Spool) -> Vec<Entry> {
        let mut all = Vec::new();
        loop {
            let chunk = spool.read_chunk(7, 1 << 20).unwrap();
            if chunk.entries.is_empty() {
                spool.commit(chunk.end).unwrap();
                return all;
            }
            all.extend(chunk.entries);
            spool.commit(chunk.end).unwrap();
        }
    }

    #[test]
    fn entries_come_back_in_order_across_segments_and_restarts() {
        let dir = dir();
        let written: Vec<Entry> = (0..300).map(entry).collect();
        {
            let (mut spool, discarded) = Spool::open(config(&dir)).unwrap();
            assert!(discarded.is_empty() && spool.is_empty());
            assert!(spool.append(written[..200].to_vec()).unwrap().is_empty());
            // Half replayed, then the process goes away.
            let chunk = spool.read_chunk(100, 1 << 20).unwrap();
            spool.commit(chunk.end).unwrap();
            assert_eq!(spool.entries(), 100);
        }
        let (mut spool, discarded) = Spool::open(config(&dir)).unwrap();
        assert!(discarded.is_empty());
        assert_eq!(spool.entries(), 100);
        assert!(spool.append(written[200..].to_vec()).unwrap().is_empty());
        assert_eq!(drain(&mut spool), written[100..].to_vec());
        assert!(spool.is_empty());
        let segments = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "spool"))
            .count();
        assert_eq!(segments, 0, "an empty spool keeps no segments");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_record_cut_mid_write_is_dropped_and_everything_before_it_replays() {
        let dir = dir();
        let written: Vec<Entry> = (0..20).map(entry).collect();
        {
            let (mut spool, _) = Spool::open(SpoolConfig { segment_bytes: 1 << 20, ..config(&dir) }).unwrap();
            spool.append(written.clone()).unwrap();
        }
        let path = segment_path(&dir, 1);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 5).unwrap();
        let (mut spool, discarded) = Spool::open(config(&dir)).unwrap();
        assert_eq!(discarded.len(), 1);
        assert_eq!(discarded[0].reason, "torn");
        assert_eq!(spool.entries(), 19);
        // New entries go after the cut, not behind the garbage.
        spool.append(vec![entry(99)]).unwrap();
        let mut expected = written[..19].to_vec();
        expected.push(entry(99));
        assert_eq!(drain(&mut spool), expected);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_damaged_record_is_never_replayed() {
        let dir = dir();
        {
            let (mut spool, _) = Spool::open(SpoolConfig { segment_bytes: 1 << 20, ..config(&dir) }).unwrap();
            spool.append((0..10).map(entry).collect()).unwrap();
        }
        let path = segment_path(&dir, 1);
        let mut bytes = fs::read(&path).unwrap();
        let first = encode_record(&entry(0)).unwrap().len();
        bytes[first + 12] ^= 0xff; // inside the second record's body
        fs::write(&path, bytes).unwrap();
        let (mut spool, discarded) = Spool::open(config(&dir)).unwrap();
        assert_eq!(discarded[0].offset, first as u64);
        assert_eq!(drain(&mut spool), vec![entry(0)]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_bound_refuses_what_does_not_fit_and_a_second_process_is_kept_out() {
        let dir = dir();
        let (mut spool, _) = Spool::open(SpoolConfig { max_bytes: 1000, ..config(&dir) }).unwrap();
        let refused = spool.append((0..100).map(entry).collect()).unwrap();
        assert!(!refused.is_empty());
        assert!(spool.bytes() <= 1000);
        assert_eq!(spool.entries() as usize + refused.len(), 100);
        let err = Spool::open(config(&dir)).unwrap_err();
        assert!(err.to_string().contains("in use by another process"), "{err}");
        drop(spool);
        assert!(Spool::open(config(&dir)).is_ok());
        fs::remove_dir_all(dir).unwrap();
    }
}
