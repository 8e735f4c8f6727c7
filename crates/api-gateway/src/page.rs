//! Cursor pagination, the same on every list: newest first, `limit` (default
//! [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]) and an opaque `cursor` taken from the
//! previous page's `next_cursor` (`null` on the last page). A cursor is stable under
//! inserts: a new row never shifts the pages a client is walking.

use actix_web::HttpRequest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use service_kit::AppError;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1-100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

impl PageQuery {
    /// (page size, id to continue below).
    pub fn resolve(&self) -> Result<(i64, Option<i64>), AppError> {
        let limit = match &self.limit {
            None => DEFAULT_LIMIT,
            Some(raw) => raw.parse::<i64>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                AppError::bad_request(
                    "limit",
                    "invalid_value",
                    format!("`limit` must be an integer from 1 to {MAX_LIMIT}"),
                )
            })?,
        };
        let after = match &self.cursor {
            None => None,
            Some(raw) if raw.is_empty() => None,
            Some(raw) => Some(decode_cursor(raw).ok_or_else(|| {
                AppError::bad_request("cursor", "invalid_value", "`cursor` is not one this API returned")
            })?),
        };
        Ok((limit, after))
    }
}

/// Parses the query string into `T`; an unknown or malformed parameter is a 400 naming it.
pub fn query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, AppError> {
    actix_web::web::Query::<T>::from_query(req.query_string()).map(|q| q.into_inner()).map_err(|err| {
        let detail = err.to_string();
        let param = detail.split('`').nth(1).unwrap_or("query").to_owned();
        AppError::bad_request(param, "invalid_query", format!("invalid query string: {detail}"))
    })
}

/// An integer query parameter, or 400 naming it (numbers arrive as text when a query
/// struct flattens [`PageQuery`] in).
pub fn integer(param: &'static str, raw: &str) -> Result<i64, AppError> {
    raw.parse().map_err(|_| AppError::bad_request(param, "invalid_value", format!("`{param}` must be an integer")))
}

/// A page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// The cursor of the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `rows` were loaded with `limit + 1`: the extra row only says another page exists.
    pub fn of(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> Self {
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        let next_cursor = if more { rows.last().map(|r| encode_cursor(id(r))) } else { None };
        Self { data: rows, next_cursor }
    }
}

fn encode_cursor(id: i64) -> String {
    format!("c{id:x}")
}

fn decode_cursor(raw: &str) -> Option<i64> {
    i64::from_str_radix(raw.strip_prefix('c')?, 16).ok().filter(|id| *id > 0)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pages_end_with_a_null_cursor_and_cursors_round_trip() {
        let page = Page::of(vec![9, 8, 7], 2, |n| *n);
        assert_eq!(page.data, vec![9, 8]);
        let cursor = page.next_cursor.unwrap();
        assert_eq!(decode_cursor(&cursor), Some(8));
        assert!(Page::of(vec![9, 8], 2, |n| *n).next_cursor.is_none());
        let bad = PageQuery { limit: Some("0".into()), cursor: None }.resolve().unwrap_err();
        assert_eq!(bad.param(), Some("limit"));
        let bad = PageQuery { limit: None, cursor: Some("zz".into()) }.resolve().unwrap_err();
        assert_eq!(bad.param(), Some("cursor"));
    }
}
