//! The dashboard's page frame, tables and number formats. One stylesheet, inline; no
//! script, no font or image from elsewhere (the pages' Content-Security-Policy forbids
//! any), so a page renders the same offline, and on a phone (the layout is one column
//! below 760 px, and wide tables scroll inside their own box).

use std::fmt::Write;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;

/// The pages' Content-Security-Policy: nothing loads from anywhere, not even this
/// server; forms post back here only.
pub const POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; \
                          frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = r#"
:root{color-scheme:light;--ink:#0f172a;--muted:#475569;--line:#e2e8f0;--bg:#f8fafc;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:var(--bg)}
header{background:#0f172a;color:#fff;padding:10px 20px;display:flex;flex-wrap:wrap;gap:8px 20px;align-items:center}
header h1{font-size:17px;margin:0 12px 0 0}
header nav a{color:#cbd5e1;text-decoration:none;margin-right:14px;padding:4px 0}
header nav a[aria-current=page]{color:#fff;border-bottom:2px solid #60a5fa}
header form{margin-left:auto}
header button{background:none;border:1px solid #475569;color:#e2e8f0;border-radius:6px;padding:4px 10px;cursor:pointer}
main{max-width:1180px;margin:0 auto;padding:16px 20px 40px}
form.filters{display:flex;flex-wrap:wrap;gap:10px 16px;align-items:end;margin:4px 0 16px}
form.filters label{display:flex;flex-direction:column;font-size:13px;color:var(--muted)}
input,select{font:inherit;padding:5px 8px;border:1px solid #cbd5e1;border-radius:6px;background:#fff;color:var(--ink)}
button.primary{font:inherit;background:var(--accent);color:#fff;border:0;border-radius:6px;padding:6px 14px;cursor:pointer}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin-bottom:18px}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:10px 14px}
.card .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin-bottom:18px}
section h2{font-size:16px;margin:0 0 8px}
.pair{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:18px;align-items:start}
svg.chart{width:100%;height:auto;display:block}
svg .tick{font-size:11px;fill:#475569}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:4px 14px;padding:0;margin:6px 0 0;font-size:13px}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.scroll{overflow-x:auto;max-height:420px;overflow-y:auto}
table{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums}
caption{text-align:left;font-size:12px;color:var(--muted);padding-bottom:4px}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead th{position:sticky;top:0;background:#fff}
.note{color:var(--muted);font-size:13px}
.bad{color:#b91c1c}
.ok{color:#047857}
.login{max-width:380px;margin:10vh auto;background:#fff;border:1px solid var(--line);border-radius:12px;padding:24px}
.login label{display:block;margin:10px 0;font-size:14px}
.login input{width:100%;margin-top:4px}
.error{background:#fef2f2;border:1px solid #fecaca;color:#991b1b;border-radius:8px;padding:8px 12px;margin:8px 0}
@media (max-width:760px){.pair{grid-template-columns:minmax(0,1fr)}main{padding:12px}header{padding:10px 12px}svg.chart:not(.ranked) .tick{font-size:19px}}
"#;

/// `&`, `<`, `>`, `"` and `'` escaped, for text and attribute values alike.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// What a number measures, and so how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Usd,
    Count,
    Ms,
    /// A share, 0-1, written as a percentage.
    Share,
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Unit {
    /// As a table cell or tooltip shows it: exact enough to check.
    pub fn long(self, v: f64) -> String {
        match self {
            Unit::Usd if v.abs() >= 1.0 => {
                let cents = (v * 100.0).round() as i64;
                format!("${}.{:02}", grouped(cents / 100), (cents % 100).abs())
            }
            Unit::Usd => format!("${v:.4}"),
            Unit::Count => grouped(v.round() as i64),
            Unit::Ms if v >= 10_000.0 => format!("{:.1} s", v / 1000.0),
            Unit::Ms => format!("{v:.0} ms"),
            Unit::Share => format!("{:.1} %", v * 100.0),
        }
    }

    /// As an axis tick shows it: short.
    pub fn short(self, v: f64) -> String {
        match self {
            Unit::Usd if v >= 1_000.0 => format!("${:.1}k", v / 1000.0),
            Unit::Usd if v >= 10.0 || v == 0.0 => format!("${v:.0}"),
            Unit::Usd if v >= 1.0 => format!("${v:.1}"),
            Unit::Usd => format!("${v:.3}"),
            Unit::Count if v >= 1_000_000.0 => format!("{:.1}M", v / 1e6),
            Unit::Count if v >= 10_000.0 => format!("{:.0}k", v / 1e3),
            Unit::Count if v >= 1_000.0 => format!("{:.1}k", v / 1e3),
            Unit::Count => format!("{v:.0}"),
            Unit::Ms if v >= 1_000.0 => format!("{:.1}s", v / 1000.0),
            Unit::Ms => format!("{v:.0}ms"),
            Unit::Share => format!("{:.0}%", v * 100.0),
        }
    }
}

/// An optional figure, or a dash.
pub fn maybe(unit: Unit, v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| unit.long(v))
}

/// A table of `rows` (already formatted cells) under `columns`, with a caption.
pub fn table(id: &str, caption: &str, columns: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::with_capacity(256 + rows.len() * 96);
    let _ =
        write!(out, r#"<div class="scroll"><table id="{}"><caption>{}</caption><thead><tr>"#, esc(id), esc(caption));
    for c in columns {
        let _ = write!(out, r#"<th scope="col">{}</th>"#, esc(c));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            if i == 0 {
                let _ = write!(out, r#"<th scope="row">{}</th>"#, esc(cell));
            } else {
                let _ = write!(out, "<td>{}</td>", esc(cell));
            }
        }
        out.push_str("</tr>");
    }
    if rows.is_empty() {
        let _ = write!(out, r#"<tr><td colspan="{}" class="note">Nothing in this range.</td></tr>"#, columns.len());
    }
    out.push_str("</tbody></table></div>");
    out
}

/// A headline figure.
pub fn card(id: &str, label: &str, value: &str) -> String {
    format!(
        r#"<div class="card" id="{}"><div class="k">{}</div><div class="v">{}</div></div>"#,
        esc(id),
        esc(label),
        esc(value)
    )
}

/// One page of the dashboard: `title`, the navigation (`nav`: (href, label, current)),
/// a sign-out form posting to `sign_out`, and `body`.
pub fn page(title: &str, heading: &str, nav: &[(String, &str, bool)], sign_out: Option<&str>, body: &str) -> String {
    let mut links = String::new();
    for (href, label, current) in nav {
        let current = if *current { r#" aria-current="page""# } else { "" };
        let _ = write!(links, r#"<a href="{}"{current}>{}</a>"#, esc(href), esc(label));
    }
    let sign_out = sign_out.map_or_else(String::new, |action| {
        format!(r#"<form method="post" action="{}"><button type="submit">Sign out</button></form>"#, esc(action))
    });
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{title} · headhunter</title><style>{STYLE}</style></head><body><header><h1>{heading}</h1><nav aria-label="Dashboard pages">{links}</nav>{sign_out}</header><main>{body}</main></body></html>"#,
        title = esc(title),
        heading = esc(heading),
    )
}

/// An HTML answer with the pages' security headers (never cached: it holds a
/// company's figures).
pub fn respond(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", POLICY))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .body(body)
}

/// A page saying what went wrong, with the status the API would give.
pub fn problem(status: StatusCode, message: &str, back: &str) -> HttpResponse {
    let body = format!(
        r#"<div class="login"><h2>{}</h2><p class="error" role="alert">{}</p><p><a href="{}">Back to the dashboard</a></p></div>"#,
        status.canonical_reason().unwrap_or("Error"),
        esc(message),
        esc(back),
    );
    respond(status, page("Dashboard", "headhunter", &[], None, &body))
}

/// The sign-in form: email and password (a company's owners and admins), or the admin
/// key (the operator).
pub fn sign_in(action: &str, operator: bool, next: &str, error: Option<&str>) -> String {
    let error = error.map_or_else(String::new, |e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e)));
    let fields = if operator {
        r#"<label>Admin key<input type="password" name="admin_key" autocomplete="off" required></label>"#.to_owned()
    } else {
        r#"<label>Email<input type="email" name="email" autocomplete="username" required></label><label>Password<input type="password" name="password" autocomplete="current-password" required></label>"#.to_owned()
    };
    let who = if operator { "Platform operator" } else { "Company owners and admins" };
    let body = format!(
        r#"<form class="login" method="post" action="{action}"><h2>Sign in to the dashboard</h2><p class="note">{who}</p>{error}{fields}<input type="hidden" name="next" value="{next}"><button class="primary" type="submit">Sign in</button></form>"#,
        action = esc(action),
        next = esc(next),
    );
    page("Sign in", "headhunter", &[], None, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_for_people() {
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(-1_000), "-1,000");
        assert_eq!(grouped(999), "999");
        assert_eq!(Unit::Usd.long(1234.5), "$1,234.50");
        assert_eq!(Unit::Usd.long(0.01234), "$0.0123");
        assert_eq!(Unit::Share.long(0.1234), "12.3 %");
        assert_eq!(Unit::Ms.long(812.0), "812 ms");
        assert_eq!(Unit::Ms.long(12_500.0), "12.5 s");
        assert_eq!(esc(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
