//! How much of a request the gateway logs. A log row is for finding a call again and
//! seeing what went wrong, not for keeping what a client sent: an attacker's 64 KiB path
//! or an upstream's megabyte of error text must not travel through the queue and into
//! the analytics database. Text longer than its limit is cut at a character boundary
//! and ends with `…`.

/// Request paths (`system_logs.request_path`, and inside `message`).
pub const MAX_PATH_BYTES: usize = 512;
/// Messages and error messages.
pub const MAX_MESSAGE_BYTES: usize = 2048;
/// Names and ids that come from outside: the requested model, the upstream's model,
/// answer id and finish reason.
pub const MAX_NAME_BYTES: usize = 200;

/// `text`, cut to at most `max` bytes.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    const MARK: &str = "…";
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(cut("short", 10), "short");
        let cut_path = cut(&format!("/{}", "é".repeat(40_000)), MAX_PATH_BYTES);
        assert!(cut_path.len() <= MAX_PATH_BYTES && cut_path.ends_with('…'), "{}", cut_path.len());
    }
}
