//! Hostile files, made here: each is what an attacker (or a broken tool) uploads.

use std::io::Write;

use super::fixture;

pub fn pdf_with_objects(objects: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.7\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        writeln!(out, "{} 0 obj", i + 1).unwrap();
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    write!(out, "xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).unwrap();
    for offset in offsets {
        writeln!(out, "{offset:010} 00000 n ").unwrap();
    }
    write!(out, "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).unwrap();
    out
}

/// A one-page PDF whose content stream is `stream` (already Flate-compressed).
pub fn pdf_with_stream(stream: &[u8]) -> Vec<u8> {
    let mut content = format!("<< /Length {} /Filter /FlateDecode >>\nstream\n", stream.len()).into_bytes();
    content.extend_from_slice(stream);
    content.extend_from_slice(b"\nendstream");
    pdf_with_objects(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>".to_vec(),
        content,
    ])
}

pub fn deflate(data: impl Fn(&mut flate2::write::ZlibEncoder<Vec<u8>>)) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    data(&mut encoder);
    encoder.finish().unwrap()
}

pub fn zip_bomb_docx() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("[Content_Types].xml", options).unwrap();
    zip.write_all(b"<Types/>").unwrap();
    zip.start_file("word/document.xml", options.large_file(true)).unwrap();
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..256 {
        zip.write_all(&zeros).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// (what, file name, bytes, words the failure reason must contain one of).
pub fn files() -> Vec<(&'static str, &'static str, Vec<u8>, &'static [&'static str])> {
    let good = fixture("one_column.pdf");
    let deflate_bomb = pdf_with_stream(&deflate(|e| {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..512 {
            e.write_all(&zeros).unwrap();
        }
    }));
    let mut nested = b"<< /Type /Catalog /Pages ".to_vec();
    nested.extend(std::iter::repeat_n(b'[', 100_000));
    nested.extend(std::iter::repeat_n(b']', 100_000));
    nested.extend_from_slice(b" >>");
    let nested = pdf_with_objects(&[nested]);
    let mut exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00".to_vec();
    exe.extend_from_slice(b"This program cannot be run in DOS mode.\r\r\n$");
    exe.resize(4096, 0);
    vec![
        ("zip bomb as DOCX", "bomb.docx", zip_bomb_docx(), &["zip bomb"]),
        ("deflate bomb in a PDF stream", "bomb.pdf", deflate_bomb, &["decompression bomb"]),
        ("PDF nested 100,000 levels", "nested.pdf", nested, &["nested too deeply", "damaged"]),
        ("truncated PDF", "truncated.pdf", good[..good.len() / 2].to_vec(), &["damaged or truncated"]),
        ("encrypted PDF", "encrypted.pdf", fixture("encrypted.pdf"), &["encrypted PDF (password protected)"]),
        ("scanned PDF", "scan.pdf", fixture("scanned.pdf"), &["no extractable text (scanned image?)"]),
        ("EXE named .pdf", "cv.pdf", exe, &["Windows executable"]),
        ("empty file", "empty.pdf", Vec::new(), &["the file is empty"]),
    ]
}
