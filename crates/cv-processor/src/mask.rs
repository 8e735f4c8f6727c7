//! Masking for fairness. What is embedded and scored is the CV with its personal data
//! replaced by placeholders: the name (as one `[NAME]` wherever it appears, then each
//! of its words), emails, phone numbers, links, labelled personal lines (address,
//! date of birth, nationality, gender, marital status, photo…) and street addresses
//! in the header.
//! The name is replaced by one token whatever its length, so CVs that differ only in
//! the name mask to the same text, chunk the same and score the same. The originals
//! stay in the file and the facts, for display only.

use std::sync::LazyLock;

use regex::Regex;

use crate::facts::Facts;

static LABELLED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?im)^(\s*(?:home\s+)?(?:address|date\s+of\s+birth|d\.?o\.?b\.?|born|birth\s*date|place\s+of\s+birth|nationality|citizenship|gender|sex|marital\s+status|family\s+status|photo|picture|age|religion|pronouns)\s*[:\-–])[^\n]*",
    )
    .unwrap_or_else(|_| unreachable!())
});
static STREET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b\d{1,5}[a-z]?\s+(?:[A-Za-zÀ-ÿ'.-]+\s+){0,3}(?:street|road|rd\.|avenue|ave\.|lane|boulevard|blvd\.|drive|way|court|place|square|straße|strasse|weg|rue|calle|via)\b[^\n]*",
    )
    .unwrap_or_else(|_| unreachable!())
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}").unwrap_or_else(|_| unreachable!())
});
static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:https?://|www\.)[^\s<>()]+|\b(?:linkedin\.com|github\.com|gitlab\.com|bitbucket\.org)/[^\s<>()]+",
    )
    .unwrap_or_else(|_| unreachable!())
});

/// The text with personal data replaced.
pub fn mask(text: &str, facts: &Facts) -> String {
    let mut out = LABELLED.replace_all(text, "$1 [REDACTED]").into_owned();
    out = EMAIL.replace_all(&out, "[EMAIL]").into_owned();
    out = URL.replace_all(&out, "[LINK]").into_owned();
    for phone in crate::facts::phones(&out) {
        out = out.replace(&phone, "[PHONE]");
    }
    // Street addresses only in the header (before the first heading): elsewhere "12
    // Downing Street" is more likely an employer or a project than where someone lives.
    let header_end = out
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|start| crate::structure::heading_kind(out[*start..].lines().next().unwrap_or("")).is_some())
        .unwrap_or(out.len());
    let header = STREET.replace_all(&out[..header_end], "[ADDRESS]").into_owned();
    out = header + &out[header_end..];
    if let Some(name) = &facts.name {
        out = replace_words(&out, name, "[NAME]");
        for part in name.split_whitespace().filter(|p| p.chars().count() >= 2) {
            out = replace_words(&out, part, "[NAME]");
        }
        // "[NAME] [NAME]" left by a name written in another order: one token.
        while out.contains("[NAME] [NAME]") {
            out = out.replace("[NAME] [NAME]", "[NAME]");
        }
    }
    out
}

/// Replaces `needle` where it stands as whole words, ignoring case.
fn replace_words(text: &str, needle: &str, with: &str) -> String {
    let pattern = format!(r"(?i)\b{}\b", regex::escape(needle.trim()));
    match Regex::new(&pattern) {
        Ok(re) => re.replace_all(text, with).into_owned(),
        Err(_) => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structure::sections;

    fn masked(cv: &str) -> String {
        let facts = crate::facts::extract(&sections(cv), cv);
        mask(cv, &facts)
    }

    #[test]
    fn personal_data_is_replaced_and_names_of_any_length_mask_alike() {
        let body = "Senior nurse. Contact NAME_EMAIL or +44 7700 900123.\nAddress: 12 Baker Street, London\n\
                    Date of birth: 01/02/1990\nExperience\nWard manager 2015 - 2022 at St Mary's; \
                    NAME_FIRST led a team of 12.";
        let one = body.replace("NAME_EMAIL", "lakisha.washington@mail.com").replace("NAME_FIRST", "Lakisha");
        let two = body.replace("NAME_EMAIL", "greg.baker@mail.com").replace("NAME_FIRST", "Greg");
        let a = masked(&format!("Lakisha Washington\n{one}"));
        let b = masked(&format!("Greg Baker\n{two}"));
        let c = masked(&format!(
            "Nguyen Thi Minh Anh\n{}",
            body.replace("NAME_EMAIL", "anh@mail.vn").replace("NAME_FIRST", "Anh")
        ));
        assert_eq!(a, b);
        assert_eq!(a, c);
        for gone in ["Lakisha", "Washington", "mail.com", "7700", "Baker Street", "1990"] {
            assert!(!a.contains(gone), "{gone} left in {a}");
        }
        assert!(a.starts_with("[NAME]\n"));
        assert!(a.contains("Ward manager 2015 - 2022 at St Mary's; [NAME] led a team of 12."), "{a}");
    }
}
