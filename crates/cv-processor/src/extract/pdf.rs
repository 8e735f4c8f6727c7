//! PDF text through `pdf-extract` (on `lopdf`), after checks of our own: encryption,
//! page count, and every compressed stream expanded under a cap before the reader
//! sees it (a deflate bomb fails here with its reason, not as an out-of-memory kill).
//!
//! Reading order is the order of the page's content stream. Generators that write one
//! column after the other (LaTeX, word processors, most PDF libraries' frames) come
//! out column by column; a PDF that draws both columns line by line interleaves them.

use std::io::Read;

use lopdf::{Document, Object};

use super::Limits;

pub fn extract(bytes: &[u8], limits: &Limits) -> Result<(String, usize), String> {
    let mut doc = Document::load_mem(bytes).map_err(|e| damaged(&e.to_string()))?;
    if doc.is_encrypted() && doc.decrypt("").is_err() {
        return Err("encrypted PDF (password protected): remove the password and upload it again".to_owned());
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(damaged("it has no pages"));
    }
    if pages.len() > limits.max_pages {
        return Err(format!("too many pages: {} (a CV may have at most {})", pages.len(), limits.max_pages));
    }
    check_streams(&doc, limits)?;

    let mut text = String::new();
    for page in pages.keys() {
        let mut page_text = String::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut output = pdf_extract::PlainTextOutput::new(&mut page_text);
            pdf_extract::output_doc_page(&doc, &mut output, *page)
        }));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(damaged(&format!("page {page}: {err}"))),
            Err(_) => return Err(damaged(&format!("page {page} could not be read"))),
        }
        text.push_str(&page_text);
        text.push('\n');
        if text.len() > limits.max_chars.saturating_mul(4) {
            break;
        }
    }
    Ok((text, pages.len()))
}

fn damaged(detail: &str) -> String {
    let detail: String = detail.chars().take(200).collect();
    format!("the PDF is damaged or truncated and cannot be read ({detail})")
}

/// Expands every Flate stream under the limits, so no stream the reader later
/// decompresses can be a bomb.
fn check_streams(doc: &Document, limits: &Limits) -> Result<(), String> {
    let mut total: u64 = 0;
    for object in doc.objects.values() {
        let Object::Stream(stream) = object else { continue };
        let filters = stream.filters().unwrap_or_default();
        if !filters.iter().any(|f| &f[..] == b"FlateDecode") {
            continue;
        }
        let mut decoder =
            flate2::read::ZlibDecoder::new(stream.content.as_slice()).take(limits.max_expanded_bytes.saturating_add(1));
        let mut sink = [0u8; 64 * 1024];
        let mut expanded: u64 = 0;
        loop {
            match decoder.read(&mut sink) {
                Ok(0) => break,
                Ok(n) => expanded += n as u64,
                // A broken stream is the reader's problem (it reports the page).
                Err(_) => break,
            }
        }
        let compressed = stream.content.len().max(1) as u64;
        if expanded > limits.max_expanded_bytes || (expanded > 1 << 20 && expanded / compressed > limits.max_ratio) {
            return Err(format!(
                "a compressed stream in the PDF expands {}× to over {} MiB (a decompression bomb?)",
                expanded / compressed,
                expanded >> 20
            ));
        }
        total += expanded;
        if total > limits.max_total_expanded_bytes {
            return Err(format!(
                "the PDF's compressed streams expand to over {} MiB in total",
                limits.max_total_expanded_bytes >> 20
            ));
        }
    }
    Ok(())
}
