//! Text out of files from strangers. This runs inside the sandboxed child process
//! (`cv-processor extract`, see [`crate::sandbox`]): a reader that panics, loops,
//! overflows its stack or allocates without end takes only the child down.
//!
//! The kind of a file is decided by its bytes, never by its name or declared type.

mod docx;
mod pdf;

use serde::{Deserialize, Serialize};

/// Limits on what one file may make the extractor do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    /// Pages of a PDF.
    pub max_pages: usize,
    /// Characters of text kept (the rest is cut and `truncated` set).
    pub max_chars: usize,
    /// Bytes one compressed stream or zip entry may expand to.
    pub max_expanded_bytes: u64,
    /// Bytes all of them together may expand to.
    pub max_total_expanded_bytes: u64,
    /// Expanded / compressed size above which a stream over 1 MiB counts as a bomb.
    pub max_ratio: u64,
    /// Entries in a DOCX archive.
    pub max_zip_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pages: 50,
            max_chars: 200_000,
            max_expanded_bytes: 32 << 20,
            max_total_expanded_bytes: 128 << 20,
            max_ratio: 200,
            max_zip_entries: 1_000,
        }
    }
}

/// What a file turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pdf,
    Docx,
    Text,
}

/// Text taken from a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extracted {
    pub format: Format,
    pub text: String,
    /// Pages for a PDF, 1 otherwise.
    pub pages: usize,
    /// The text was longer than `max_chars` and was cut.
    pub truncated: bool,
}

/// The child's answer: text, or why there is none (in words for a recruiter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Extracted(Extracted),
    Failed(String),
}

/// Extracts the text of `bytes`, whatever they turn out to be.
pub fn extract(bytes: &[u8], limits: &Limits) -> Outcome {
    let result = match sniff(bytes) {
        Ok(Format::Pdf) => pdf::extract(bytes, limits),
        Ok(Format::Docx) => docx::extract(bytes, limits),
        Ok(Format::Text) => text(bytes).map(|t| (t, 1)),
        Err(reason) => Err(reason),
    };
    match result {
        Ok((text, pages)) => finish(sniff(bytes).unwrap_or(Format::Text), text, pages, limits),
        Err(reason) => Outcome::Failed(reason),
    }
}

fn finish(format: Format, text: String, pages: usize, limits: &Limits) -> Outcome {
    let text = normalise(&text);
    if text.chars().filter(|c| c.is_alphanumeric()).count() < 20 {
        return Outcome::Failed(match format {
            Format::Pdf => "no extractable text (scanned image?): the PDF has no text layer; upload a PDF with text, \
                           or a DOCX"
                .to_owned(),
            _ => "no extractable text: the document is empty".to_owned(),
        });
    }
    let truncated = text.chars().count() > limits.max_chars;
    let text = if truncated { text.chars().take(limits.max_chars).collect() } else { text };
    Outcome::Extracted(Extracted { format, text, pages, truncated })
}

/// Decides the format from the first bytes.
pub fn sniff(bytes: &[u8]) -> Result<Format, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("the file is empty".to_owned());
    }
    let head = &bytes[..bytes.len().min(1024)];
    if head.windows(5).any(|w| w == b"%PDF-") {
        return Ok(Format::Pdf);
    }
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(b"PK\x03\x04") {
        return Ok(Format::Docx);
    }
    let other = if starts(b"MZ") {
        Some("a Windows executable")
    } else if starts(b"\x7fELF") {
        Some("a program (ELF executable)")
    } else if starts(b"\xD0\xCF\x11\xE0") {
        Some("an old Word .doc (or another Office 97-2003) file; save it as DOCX or PDF")
    } else if starts(b"\x89PNG") || starts(b"\xFF\xD8\xFF") || starts(b"GIF8") {
        Some("an image")
    } else if starts(b"{\\rtf") {
        Some("an RTF document; save it as DOCX or PDF")
    } else if starts(b"\x1f\x8b") || starts(b"7z\xBC\xAF") || starts(b"Rar!") {
        Some("a compressed archive")
    } else {
        None
    };
    if let Some(what) = other {
        return Err(format!("not a CV document: the file is {what}, not a PDF, DOCX or text file"));
    }
    text(bytes).map(|_| Format::Text)
}

/// Plain text: UTF-8 (a BOM is dropped), UTF-16 with a BOM, or Latin-1 when it reads as
/// text; binary data is refused.
fn text(bytes: &[u8]) -> Result<String, String> {
    let binary = || "not a CV document: the file is binary data, not a PDF, DOCX or text file".to_owned();
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE").or_else(|| bytes.strip_prefix(b"\xFE\xFF")) {
        let little = bytes.starts_with(b"\xFF\xFE");
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|p| if little { u16::from_le_bytes([p[0], p[1]]) } else { u16::from_be_bytes([p[0], p[1]]) })
            .collect();
        return String::from_utf16(&units).map_err(|_| binary());
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let controls = bytes.iter().filter(|b| b.is_ascii_control() && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c)).count();
    if bytes.contains(&0) || controls * 100 > bytes.len() {
        return Err(binary());
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => Ok(bytes.iter().map(|b| char::from(*b)).collect()),
    }
}

/// One line break style, no trailing spaces, at most one blank line in a row, no
/// control characters, non-breaking and odd spaces as plain spaces.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.replace("\r\n", "\n").replace('\r', "\n").split('\n') {
        let line: String = line
            .chars()
            .map(|c| if c == '\t' || c == '\u{a0}' || c == '\u{2007}' || c == '\u{202f}' { ' ' } else { c })
            .filter(|c| !c.is_control() && *c != '\u{feff}' && *c != '\u{ad}')
            .collect();
        let line = line.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn files_are_recognised_by_their_bytes() {
        assert_eq!(sniff(b"%PDF-1.7\n..."), Ok(Format::Pdf));
        assert_eq!(sniff(b"PK\x03\x04rest"), Ok(Format::Docx));
        assert_eq!(sniff("Jane Doe\nRust engineer".as_bytes()), Ok(Format::Text));
        assert!(sniff(b"MZ\x90\x00\x03\x00\x00\x00").unwrap_err().contains("Windows executable"));
        assert_eq!(sniff(b"").unwrap_err(), "the file is empty");
        assert_eq!(sniff(b"  \n ").unwrap_err(), "the file is empty");
        assert!(sniff(&[0u8, 1, 2, 3, 200, 201]).unwrap_err().contains("binary"));
    }

    #[test]
    fn text_is_normalised_and_short_text_is_refused() {
        assert_eq!(normalise("a\t b \r\n\r\n\r\n\u{a0}c  "), "a b\n\nc");
        let Outcome::Failed(reason) = extract(b"hi", &Limits::default()) else { panic!("accepted") };
        assert!(reason.contains("no extractable text"));
        let long = "word ".repeat(100);
        let Outcome::Extracted(e) = extract(long.as_bytes(), &Limits { max_chars: 50, ..Limits::default() }) else {
            panic!("refused")
        };
        assert!(e.truncated && e.text.chars().count() == 50);
    }
}
