//! DOCX text: the archive is opened under caps (entries, expanded size per entry and
//! in total, compression ratio), then `word/document.xml` is read paragraph by
//! paragraph. Table cells become lines of their own; headers, footers, comments and
//! text boxes outside the body are left out. Columns are a layout property in DOCX,
//! so two-column CVs come out in reading order.

use std::io::{Cursor, Read};

use quick_xml::events::Event;

use super::Limits;

pub fn extract(bytes: &[u8], limits: &Limits) -> Result<(String, usize), String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("the DOCX is damaged and cannot be opened ({e})"))?;
    if archive.len() > limits.max_zip_entries {
        return Err(format!("the DOCX has too many parts: {} (at most {})", archive.len(), limits.max_zip_entries));
    }
    // Declared sizes first: an archive that claims to be a bomb is refused unread.
    let mut declared: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(|e| format!("the DOCX is damaged ({e})"))?;
        declared = declared.saturating_add(entry.size());
        let ratio = entry.size() / entry.compressed_size().max(1);
        if entry.size() > limits.max_expanded_bytes || (entry.size() > 1 << 20 && ratio > limits.max_ratio) {
            return Err(format!("a part of the DOCX expands {ratio}× to {} MiB (a zip bomb?)", entry.size() >> 20));
        }
    }
    if declared > limits.max_total_expanded_bytes {
        return Err(format!("the DOCX expands to {} MiB in total (a zip bomb?)", declared >> 20));
    }
    let xml = {
        let entry = archive
            .by_name("word/document.xml")
            .map_err(|_| "not a DOCX: a ZIP archive without word/document.xml".to_owned())?;
        // Declared sizes can lie: the read itself is capped too.
        let mut xml = Vec::new();
        entry
            .take(limits.max_expanded_bytes + 1)
            .read_to_end(&mut xml)
            .map_err(|e| format!("the DOCX is damaged ({e})"))?;
        if xml.len() as u64 > limits.max_expanded_bytes {
            return Err(format!(
                "the DOCX's text expands beyond {} MiB (a zip bomb?)",
                limits.max_expanded_bytes >> 20
            ));
        }
        xml
    };
    Ok((body_text(&xml, limits.max_chars.saturating_mul(4))?, 1))
}

/// The text of the document body: paragraphs and table cells on lines of their own.
fn body_text(xml: &[u8], max_len: usize) -> Result<String, String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut text = String::new();
    let mut in_text = false;
    let mut buf = Vec::new();
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| format!("the DOCX's text is malformed ({e})"))?;
        match event {
            Event::Start(e) if e.local_name().as_ref() == b"t" => in_text = true,
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => text.push('\n'),
                b"tbl" => text.push('\n'),
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                b"tab" => text.push('\t'),
                b"br" | b"cr" => text.push('\n'),
                _ => {}
            },
            Event::Text(t) if in_text => {
                let decoded = t.decode().map_err(|e| format!("the DOCX's text is malformed ({e})"))?;
                text.push_str(
                    &quick_xml::escape::unescape(&decoded)
                        .map_err(|e| format!("the DOCX's text is malformed ({e})"))?,
                );
            }
            Event::GeneralRef(r) if in_text => {
                let name = r.decode().map_err(|e| format!("the DOCX's text is malformed ({e})"))?;
                let resolved = quick_xml::escape::unescape(&format!("&{name};")).map(|s| s.into_owned());
                text.push_str(&resolved.unwrap_or_default());
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
        if text.len() > max_len {
            break;
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paragraphs_cells_and_entities_come_out_as_lines() {
        let xml = br#"<w:document xmlns:w="x"><w:body>
            <w:p><w:r><w:t>Jane &amp; Co</w:t></w:r><w:r><w:tab/><w:t xml:space="preserve">Rust</w:t></w:r></w:p>
            <w:tbl><w:tr><w:tc><w:p><w:r><w:t>Left</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Right</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
        </w:body></w:document>"#;
        let text = body_text(xml, 10_000).unwrap();
        assert_eq!(crate::extract::normalise(&text), "Jane & Co Rust\nLeft\nRight");
    }
}
