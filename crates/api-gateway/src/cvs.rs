//! CVs: upload (multipart, many files a request), status, list, the original file,
//! delete. An upload answers 202 as soon as the files are stored and their rows
//! written; processing happens in cv-processor, fed through the `cv_jobs` stream.
//! Company-scoped like every resource: another company's CV is not found (404).

use std::path::PathBuf;

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use common_models::cv::{CvStatus, CvStatusEvent, ForgetCv, ProcessCv, StatusEvent};
use common_models::ids::{CompanyId, CvId};
use common_models::schema::main::cvs;
use common_models::storage::key_for;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use service_kit::AppError;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::access::Action;
use crate::audit::{Audit, Change};
use crate::jobs::{not_found, parse_id};
use crate::page::{Page, PageQuery};
use crate::state::AppState;

/// Longest file name kept (longer ones are cut, keeping the extension).
const FILE_NAME_MAX: usize = 255;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/cvs", web::post().to(upload))
        .route("/api/v1/cvs", web::get().to(list))
        .route("/api/v1/cvs/{id}", web::get().to(read))
        .route("/api/v1/cvs/{id}", web::delete().to(delete))
        .route("/api/v1/cvs/{id}/file", web::get().to(download));
}

/// What a CV looks like through the API.
#[derive(Debug, Clone, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = cvs)]
pub struct Cv {
    pub id: i64,
    #[serde(skip)]
    pub company_id: i64,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: i64,
    /// SHA-256 of the file, hex.
    #[serde(serialize_with = "hex")]
    #[schema(value_type = String)]
    pub content_hash: Vec<u8>,
    #[serde(skip)]
    pub storage_key: String,
    /// `queued`, `processing`, `processed` or `failed`.
    pub status: String,
    pub failure_reason: Option<String>,
    pub attempts: i32,
    pub page_count: Option<i32>,
    pub char_count: Option<i32>,
    pub section_count: Option<i32>,
    pub chunk_count: Option<i32>,
    /// What processing found (left out of lists: read the CV).
    pub facts: Option<Value>,
    pub summary: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

fn hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A received file, in the staging directory until it is kept (removed if never).
struct Staged {
    path: PathBuf,
    file_name: String,
    content_type: String,
    size: u64,
    sha256: [u8; 32],
    kept: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One line of the upload's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Accepted {
    id: i64,
    file_name: String,
    status: String,
    /// The company uploaded this file before: the existing CV is returned, not redone.
    duplicate: bool,
}

/// The upload's answer: a line per file, in the order sent.
#[derive(Serialize, utoipa::ToSchema)]
struct Uploaded {
    data: Vec<Accepted>,
}

/// The form of an upload: one or more file parts named `file`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct UploadForm {
    /// PDF, DOCX or text.
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<Vec<u8>>,
}

/// Uploads CVs (multipart, file parts named `file`); answers once they are stored,
/// and cv-processor processes them. A file the company uploaded before is not redone.
#[utoipa::path(post, path = "/api/v1/cvs", tag = "cvs",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Stored and queued.", body = Uploaded),
        (status = 400, description = "No file part, a part that is not a file, or a broken form.", body = crate::openapi::ErrorBody),
        (status = 413, description = "A file over the size limit (`file_too_large`) or too many files (`too_many_files`); see the description of the API for the limits.", body = crate::openapi::ErrorBody),
    ))]
async fn upload(req: HttpRequest, state: web::Data<AppState>, payload: Multipart) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::WriteCvs).await?;
    let company = caller.company_id;
    let staged = receive(&state, payload).await?;

    // One row per distinct file; the same file twice in one upload is one CV.
    let mut unique: Vec<Staged> = Vec::with_capacity(staged.len());
    let mut order = Vec::with_capacity(staged.len());
    for file in staged {
        match unique.iter().position(|u| u.sha256 == file.sha256) {
            Some(i) => order.push((i, file.file_name.clone())),
            None => {
                order.push((unique.len(), file.file_name.clone()));
                unique.push(file);
            }
        }
    }
    for file in &mut unique {
        let key = key_for(company, &file.sha256);
        state.files.put_file(&key, &file.path).await.map_err(|e| AppError::unavailable("file storage", e))?;
        file.kept = true;
    }

    let mut conn = state.db.get().await?;
    let rows: Vec<_> = unique
        .iter()
        .map(|f| {
            (
                cvs::company_id.eq(company.0),
                cvs::file_name.eq(f.file_name.clone()),
                cvs::content_type.eq(f.content_type.clone()),
                cvs::size_bytes.eq(i64::try_from(f.size).unwrap_or(i64::MAX)),
                cvs::content_hash.eq(f.sha256.to_vec()),
                cvs::storage_key.eq(key_for(company, &f.sha256)),
            )
        })
        .collect();
    let audit = Audit::of(&req, &caller);
    let offered = order.len();
    let created: Vec<(i64, Vec<u8>)> = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let created: Vec<(i64, Vec<u8>)> = diesel::insert_into(cvs::table)
                .values(&rows)
                .on_conflict((cvs::company_id, cvs::content_hash))
                .do_nothing()
                .returning((cvs::id, cvs::content_hash))
                .get_results(conn)
                .await?;
            let ids: Vec<i64> = created.iter().map(|(id, _)| *id).collect();
            let change = Change {
                action: "cv.upload",
                object_type: "cv",
                object_id: None,
                before: None,
                after: Some(json!({"created": ids, "files": offered})),
            };
            audit.write(conn, change).await?;
            Ok(created)
        })
        .await?;
    crate::api_cache::changed(&state, company.0).await;
    let existing: Vec<(i64, Vec<u8>, String)> = if created.len() < unique.len() {
        let hashes: Vec<Vec<u8>> =
            unique.iter().map(|f| f.sha256.to_vec()).filter(|h| !created.iter().any(|(_, c)| c == h)).collect();
        cvs::table
            .filter(cvs::company_id.eq(company.0).and(cvs::content_hash.eq_any(hashes)))
            .select((cvs::id, cvs::content_hash, cvs::status))
            .load(&mut conn)
            .await?
    } else {
        Vec::new()
    };
    drop(conn);

    let now = Utc::now();
    let mut outcome: Vec<Option<(i64, String, bool)>> = vec![None; unique.len()];
    for (i, file) in unique.iter().enumerate() {
        if let Some((id, _)) = created.iter().find(|(_, h)| h.as_slice() == file.sha256) {
            state.producer.publish(&ProcessCv {
                cv_id: CvId(*id),
                company_id: company,
                storage_key: key_for(company, &file.sha256),
                file_name: file.file_name.clone(),
                content_type: file.content_type.clone(),
                queued_at: now,
            });
            state.emit_event(StatusEvent::Cv(CvStatusEvent {
                cv_id: CvId(*id),
                company_id: company,
                status: CvStatus::Queued,
                failure_reason: None,
                file_name: file.file_name.clone(),
                at: now,
            }));
            outcome[i] = Some((*id, CvStatus::Queued.as_str().to_owned(), false));
        } else if let Some((id, _, status)) = existing.iter().find(|(_, h, _)| h.as_slice() == file.sha256) {
            outcome[i] = Some((*id, status.clone(), true));
        }
    }
    let created_count = created.len() as u64;
    state.metrics.cv_uploads.with_label_values(&["accepted"]).inc_by(created_count);
    state.metrics.cv_uploads.with_label_values(&["duplicate"]).inc_by(order.len() as u64 - created_count);

    let mut data = Vec::with_capacity(order.len());
    let mut seen = vec![false; unique.len()];
    for (i, file_name) in order {
        // A file deleted between the insert and the look-up has no outcome: say so.
        let Some((id, status, duplicate)) = outcome[i].clone() else {
            return Err(AppError::unavailable("the main database", anyhow::anyhow!("a CV vanished during its upload")));
        };
        data.push(Accepted { id, file_name, status, duplicate: duplicate || seen[i] });
        seen[i] = true;
    }
    Ok(HttpResponse::Accepted().json(Uploaded { data }))
}

/// Reads every file part into the staging directory, hashing as it goes; enforces the
/// per-file and per-request limits before anything is kept.
async fn receive(state: &AppState, mut payload: Multipart) -> Result<Vec<Staged>, AppError> {
    let limits = &state.settings.cvs;
    let mut staged: Vec<Staged> = Vec::new();
    while let Some(field) = payload.next().await {
        let mut field = match field {
            Ok(field) => field,
            // A form without parts reads as an incomplete stream.
            Err(err) if staged.is_empty() => {
                return Err(AppError::bad_request(
                    "file",
                    "missing_field",
                    format!("no file in the upload ({err}): send CVs as multipart/form-data file parts named `file`"),
                ));
            }
            Err(err) => return Err(multipart_error(err)),
        };
        let Some(raw_name) = field.content_disposition().and_then(|cd| cd.get_filename()).map(str::to_owned) else {
            let name = field.name().unwrap_or("").to_owned();
            return Err(AppError::bad_request(
                name.clone(),
                "unexpected_field",
                format!("part `{name}` is not a file: send each CV as a file part (filename given), named `file`"),
            ));
        };
        if staged.len() >= limits.max_files {
            return Err(AppError::new(
                service_kit::error::ErrorKind::PayloadTooLarge,
                format!("at most {} files an upload", limits.max_files),
            )
            .with_param("file")
            .with_code("too_many_files"));
        }
        let file_name = clean_file_name(&raw_name);
        let content_type = content_type_of(&file_name, field.content_type().map(|m| m.essence_str()));
        let path = state.files.staging_dir().join(format!("upload-{}", uuid::Uuid::new_v4()));
        let mut file = Staged { path, file_name, content_type, size: 0, sha256: [0; 32], kept: false };
        let mut out =
            tokio::fs::File::create(&file.path).await.map_err(|e| AppError::unavailable("file storage", e))?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(multipart_error)?;
            file.size += chunk.len() as u64;
            if file.size > limits.max_file_bytes as u64 {
                return Err(AppError::new(
                    service_kit::error::ErrorKind::PayloadTooLarge,
                    format!("file {:?} exceeds the limit of {} bytes a file", file.file_name, limits.max_file_bytes),
                )
                .with_param("file")
                .with_code("file_too_large"));
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(|e| AppError::unavailable("file storage", e))?;
        }
        out.flush().await.map_err(|e| AppError::unavailable("file storage", e))?;
        file.sha256 = hasher.finalize().into();
        staged.push(file);
    }
    if staged.is_empty() {
        return Err(AppError::bad_request(
            "file",
            "missing_field",
            "no file in the upload: send CVs as multipart/form-data file parts named `file`",
        ));
    }
    Ok(staged)
}

fn multipart_error(err: actix_multipart::MultipartError) -> AppError {
    AppError::bad_body("invalid_multipart", format!("could not read the multipart upload: {err}"))
}

/// Keeps the last path component, printable characters only, at most [`FILE_NAME_MAX`].
fn clean_file_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        return "unnamed".to_owned();
    }
    if cleaned.chars().count() <= FILE_NAME_MAX {
        return cleaned.to_owned();
    }
    let ext: String = cleaned.rsplit_once('.').map(|(_, e)| e).filter(|e| e.len() <= 10).unwrap_or("").to_owned();
    let head: String = cleaned.chars().take(FILE_NAME_MAX - ext.len() - 1).collect();
    if ext.is_empty() { head } else { format!("{head}.{ext}") }
}

/// The declared type, or one guessed from the extension; cv-processor trusts neither
/// and looks at the bytes.
fn content_type_of(file_name: &str, declared: Option<&str>) -> String {
    let by_extension = match file_name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).as_deref() {
        Some("pdf") => Some("application/pdf"),
        Some("docx") => Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        Some("txt" | "text" | "md") => Some("text/plain"),
        _ => None,
    };
    match declared {
        Some(d) if d != "application/octet-stream" && d.len() <= 100 => d.to_owned(),
        _ => by_extension.unwrap_or("application/octet-stream").to_owned(),
    }
}

async fn find(state: &AppState, company: CompanyId, raw_id: &str) -> Result<Cv, AppError> {
    let id = parse_id(raw_id, "CV")?;
    let mut conn = state.db.get().await?;
    cvs::table
        .filter(cvs::id.eq(id).and(cvs::company_id.eq(company.0)))
        .select(Cv::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(|| not_found("CV", id))
}

/// A CV, with its facts and summary once processed.
#[utoipa::path(get, path = "/api/v1/cvs/{id}", tag = "cvs", params(("id" = i64, Path, minimum = 1, example = 1, description = "The CV's id.")),
    responses((status = 200, description = "The CV.", body = Cv)))]
async fn read(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let cv = find(&state, caller.company_id, &id).await?;
    Ok(HttpResponse::Ok().json(cv))
}

/// The CV's original file, as uploaded.
#[utoipa::path(get, path = "/api/v1/cvs/{id}/file", tag = "cvs", params(("id" = i64, Path, minimum = 1, example = 1, description = "The CV's id.")),
    responses((status = 200, description = "The file, with the content type it was stored with.", content_type = "*/*", body = Vec<u8>)))]
async fn download(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let cv = find(&state, caller.company_id, &id).await?;
    let bytes = match state.files.get(&cv.storage_key).await {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(not_found("file of CV", cv.id)),
        Err(err) => return Err(AppError::unavailable("file storage", err)),
    };
    let disposition = header::ContentDisposition {
        disposition: header::DispositionType::Attachment,
        parameters: vec![header::DispositionParam::Filename(cv.file_name.clone())],
    };
    Ok(HttpResponse::Ok().content_type(cv.content_type.clone()).insert_header(disposition).body(bytes))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only CVs with this status.
    #[param(pattern = "^(queued|processing|processed|failed)$")]
    status: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// The company's CVs, newest first (without their facts).
#[utoipa::path(get, path = "/api/v1/cvs", tag = "cvs", params(ListQuery, PageQuery),
    responses((status = 200, description = "A page of CVs.", body = Page<Cv>)))]
async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let query: ListQuery = crate::page::query(&req)?;
    let (limit, after) = query.page.resolve()?;
    let cached = crate::api_cache::slot(&state, &req, &caller, "cvs").await;
    if let Some(hit) = cached.hit(&state).await {
        return Ok(hit);
    }
    let mut q = cvs::table.filter(cvs::company_id.eq(caller.company_id.0)).into_boxed();
    if let Some(raw) = &query.status {
        let status = CvStatus::parse(raw).ok_or_else(|| {
            AppError::bad_request(
                "status",
                "invalid_value",
                "`status` must be one of queued, processing, processed, failed",
            )
        })?;
        q = q.filter(cvs::status.eq(status.as_str()));
    }
    if let Some(after) = after {
        q = q.filter(cvs::id.lt(after));
    }
    let mut conn = state.db.get().await?;
    let mut rows: Vec<Cv> = q.order(cvs::id.desc()).limit(limit + 1).select(Cv::as_select()).load(&mut conn).await?;
    // The list leaves out the heaviest field; read one CV for its facts.
    for row in &mut rows {
        row.facts = None;
    }
    drop(conn);
    cached.answer(&state, &Page::of(rows, limit, |cv| cv.id)).await
}

/// Deletes a CV, its file and its vectors.
#[utoipa::path(delete, path = "/api/v1/cvs/{id}", tag = "cvs", params(("id" = i64, Path, minimum = 1, example = 1, description = "The CV's id.")),
    responses((status = 204, description = "Deleted.")))]
async fn delete(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::WriteCvs).await?;
    let id = parse_id(&id, "CV")?;
    let audit = Audit::of(&req, &caller);
    let company = caller.company_id.0;
    let mut conn = state.db.get().await?;
    let (key, analyses): (String, Vec<i64>) = conn
        .transaction::<_, AppError, _>(async move |conn| {
            // Its applications' analyses go with it (cascade); their cached copies too.
            let analyses = crate::analysis::of_cv(conn, company, id).await?;
            let target = cvs::table.filter(cvs::id.eq(id).and(cvs::company_id.eq(company)));
            let (key, file_name): (String, String) = diesel::delete(target)
                .returning((cvs::storage_key, cvs::file_name))
                .get_result(conn)
                .await
                .optional()?
                .ok_or_else(|| not_found("CV", id))?;
            let change = Change {
                action: "cv.delete",
                object_type: "cv",
                object_id: Some(id),
                before: Some(json!({"file_name": file_name})),
                after: None,
            };
            audit.write(conn, change).await?;
            Ok((key, analyses))
        })
        .await?;
    drop(conn);
    crate::api_cache::changed(&state, company).await;
    crate::analysis::forget_cached(&state, caller.company_id, &analyses).await;
    // Its vectors are cv-processor's to remove.
    state.producer.publish(&ForgetCv { cv_id: CvId(id), company_id: caller.company_id });
    // The row is gone, so the CV is gone for every reader; a file left behind by a
    // storage failure is unreachable and is logged for clean-up.
    if let Err(err) = state.files.delete(&key).await {
        tracing::warn!(cv_id = id, key, error = %err, "the file of a deleted CV could not be removed");
    }
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_paths_and_control_characters_and_keep_their_extension() {
        assert_eq!(clean_file_name("C:\\Users\\x\\cv.pdf"), "cv.pdf");
        assert_eq!(clean_file_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_file_name("a\u{0}b\n.docx"), "ab.docx");
        assert_eq!(clean_file_name("  "), "unnamed");
        let long = format!("{}.pdf", "x".repeat(400));
        let cut = clean_file_name(&long);
        assert_eq!(cut.chars().count(), FILE_NAME_MAX);
        assert!(cut.ends_with(".pdf"));
        assert_eq!(content_type_of("cv.PDF", None), "application/pdf");
        assert_eq!(content_type_of("cv.pdf", Some("application/octet-stream")), "application/pdf");
        assert_eq!(content_type_of("cv", Some("text/plain")), "text/plain");
    }
}
