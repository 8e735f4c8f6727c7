//! Where chunk vectors live: one trait, so the embedded engine ([`EdgeStore`],
//! `qdrant-edge`, data in a local directory, the default) and a Qdrant server
//! ([`ServerStore`], when `QDRANT_URL` is set) stand behind the same calls.
//! A point is one chunk of one CV: its id is derived from (CV, chunk), so redoing a CV
//! overwrites rather than duplicates, and its payload carries company, CV, chunk,
//! section and the (masked) text shown as evidence. Every point has a dense vector
//! (the embedding model's) and a sparse BM25 vector (term frequencies; the IDF is the
//! engine's, over the whole collection).
//!
//! The stores rank chunks by one kind of vector at a time; fusing the two rankings is
//! `matching`'s: it ranks CVs, not chunks (a CV's place in each list is its best
//! chunk's), and it shows each list's evidence, which a fused chunk list from the
//! engine's own RRF would not give back.

pub mod server;

pub use server::ServerStore;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use qdrant_edge::{
    Condition, Distance, EdgeConfigBuilder, EdgeShard, EdgeSparseVectorParamsBuilder, EdgeVectorParamsBuilder,
    FieldCondition, Filter, JsonPath, Match, Modifier, NamedQuery, PayloadFieldSchema, PayloadSchemaType, PointId,
    PointInsertOperations, PointOperations, PointStruct, QueryEnum, SearchRequestBuilder, UpdateOperation,
    ValueVariants, Vector, VectorInternal, Vectors, WithPayloadInterface,
};
use serde_json::json;

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'a>>;

/// Chunks a CV may have (point ids are `cv * MAX_CHUNKS + chunk`).
pub const MAX_CHUNKS: usize = 4096;
pub(crate) const DENSE: &str = "dense";
pub(crate) const SPARSE: &str = "bm25";

/// One chunk, ready to store.
#[derive(Debug, Clone)]
pub struct ChunkPoint {
    pub chunk: usize,
    pub section: String,
    pub text: String,
    pub dense: Vec<f32>,
}

/// A chunk found by a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub cv_id: i64,
    pub chunk: usize,
    pub section: String,
    pub text: String,
    pub score: f32,
}

/// What a search ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranking {
    /// Cosine similarity of the embeddings.
    Dense,
    /// BM25 of the words.
    Keywords,
}

/// Opens the configured store: the server when `settings.url` is set, else the
/// embedded engine in `settings.dir` (returned as well: it needs [`EdgeStore::optimize`]
/// now and then).
pub async fn open(
    settings: &crate::settings::VectorsSection,
    dimension: usize,
) -> anyhow::Result<(Arc<dyn VectorStore>, Option<Arc<EdgeStore>>)> {
    if settings.url.trim().is_empty() {
        let dir = settings.dir.clone();
        let edge = Arc::new(
            tokio::task::spawn_blocking(move || EdgeStore::open(&dir, dimension))
                .await?
                .with_context(|| format!("opening the vector store in {}", settings.dir.display()))?,
        );
        Ok((edge.clone(), Some(edge)))
    } else {
        let server =
            ServerStore::connect(&settings.url, settings.api_key.expose(), &settings.collection, dimension).await?;
        Ok((Arc::new(server), None))
    }
}

/// Vector storage for CV chunks.
pub trait VectorStore: Send + Sync + 'static {
    /// Replaces the CV's chunks with `points` (none left from an earlier run).
    fn replace_cv(&self, company: i64, cv: i64, points: Vec<ChunkPoint>) -> StoreFuture<'_, ()>;
    /// Removes the CV's chunks.
    fn delete_cv(&self, company: i64, cv: i64) -> StoreFuture<'_, ()>;
    /// Chunks of the company (of one CV, if given) nearest to the query.
    fn search<'a>(
        &'a self,
        company: i64,
        cv: Option<i64>,
        ranking: Ranking,
        text: &'a str,
        dense: &'a [f32],
        limit: usize,
    ) -> StoreFuture<'a, Vec<Hit>>;
    /// Stored chunks of the company (of one CV, if given).
    fn count(&self, company: i64, cv: Option<i64>) -> StoreFuture<'_, usize>;
}

/// The embedded engine: one `qdrant-edge` shard in a local directory. Its calls are
/// synchronous, so each runs on the blocking pool.
pub struct EdgeStore {
    shard: Arc<EdgeShard>,
    bm25: Arc<EdgeBm25>,
}

impl EdgeStore {
    /// Opens the shard in `dir`, creating it (for vectors of `dimension`) if empty.
    pub fn open(dir: &Path, dimension: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = EdgeConfigBuilder::new()
            .vector(DENSE, EdgeVectorParamsBuilder::new(dimension, Distance::Cosine).build())
            .sparse_vector(SPARSE, EdgeSparseVectorParamsBuilder::new().modifier(Modifier::Idf).build())
            .build();
        let fresh = std::fs::read_dir(dir)?.next().is_none();
        let shard = if fresh { EdgeShard::new(dir, config)? } else { EdgeShard::load(dir, Some(config))? };
        for (field, kind) in [("company_id", PayloadSchemaType::Integer), ("cv_id", PayloadSchemaType::Integer)] {
            shard.update(UpdateOperation::FieldIndexOperation(qdrant_edge::FieldIndexOperations::CreateIndex(
                qdrant_edge::CreateIndex {
                    field_name: path(field),
                    field_schema: Some(PayloadFieldSchema::FieldType(kind)),
                },
            )))?;
        }
        let bm25 = EdgeBm25::new(EdgeBm25Config::default()).map_err(|e| anyhow::anyhow!("BM25: {e}"))?;
        Ok(Self { shard: Arc::new(shard), bm25: Arc::new(bm25) })
    }

    /// Builds the HNSW index over what was added since the last call (the engine has
    /// no background optimiser); cheap when nothing changed.
    pub async fn optimize(&self) -> anyhow::Result<bool> {
        let shard = self.shard.clone();
        Ok(tokio::task::spawn_blocking(move || shard.optimize()).await??)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&EdgeShard, &EdgeBm25) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (shard, bm25) = (self.shard.clone(), self.bm25.clone());
        tokio::task::spawn_blocking(move || work(&shard, &bm25)).await?
    }
}

/// A chunk's payload, the same in every store: what it belongs to (filtered on) and
/// the evidence shown.
pub(crate) fn payload(company: i64, cv: i64, p: &ChunkPoint) -> serde_json::Value {
    json!({"company_id": company, "cv_id": cv, "chunk": p.chunk, "section": p.section, "text": p.text})
}

/// The hit a stored payload describes (`None` for a point not written by [`payload`]).
pub(crate) fn hit(payload: &serde_json::Map<String, serde_json::Value>, score: f32) -> Option<Hit> {
    Some(Hit {
        cv_id: payload.get("cv_id")?.as_i64()?,
        chunk: usize::try_from(payload.get("chunk")?.as_u64()?).ok()?,
        section: payload.get("section")?.as_str()?.to_owned(),
        text: payload.get("text")?.as_str()?.to_owned(),
        score,
    })
}

/// A payload field's path (the names used here are plain keys).
fn path(field: &'static str) -> JsonPath {
    JsonPath::try_from(field).unwrap_or_else(|_| unreachable!("{field} is a plain key"))
}

fn equals(field: &'static str, value: i64) -> Condition {
    Condition::Field(FieldCondition::new_match(path(field), Match::from(ValueVariants::Integer(value))))
}

fn scope(company: i64, cv: Option<i64>) -> Filter {
    let mut filter = Filter::new_must(equals("company_id", company));
    if let (Some(cv), Some(must)) = (cv, filter.must.as_mut()) {
        must.push(equals("cv_id", cv));
    }
    filter
}

/// A chunk's point id: one per (CV, chunk), so a redo overwrites.
pub(crate) fn point_number(cv: i64, chunk: usize) -> u64 {
    u64::try_from(cv).unwrap_or(0) * MAX_CHUNKS as u64 + chunk as u64
}

fn point_id(cv: i64, chunk: usize) -> PointId {
    PointId::NumId(point_number(cv, chunk))
}

impl VectorStore for EdgeStore {
    fn replace_cv(&self, company: i64, cv: i64, points: Vec<ChunkPoint>) -> StoreFuture<'_, ()> {
        Box::pin(self.blocking(move |shard, bm25| {
            anyhow::ensure!(points.len() <= MAX_CHUNKS, "a CV may have at most {MAX_CHUNKS} chunks");
            shard.update(UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(scope(
                company,
                Some(cv),
            ))))?;
            let mut structs = Vec::with_capacity(points.len());
            for p in points {
                let payload = payload(company, cv, &p);
                let sparse = bm25.embed_document(&p.text);
                let vectors = Vectors::new_named([
                    (DENSE, Vector::new_dense(p.dense)),
                    (SPARSE, Vector(VectorInternal::Sparse(sparse))),
                ]);
                structs.push(PointStruct::new(point_id(cv, p.chunk), vectors, payload).into());
            }
            if !structs.is_empty() {
                shard.update(UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                    PointInsertOperations::PointsList(structs),
                )))?;
            }
            shard.flush()?;
            Ok(())
        }))
    }

    fn delete_cv(&self, company: i64, cv: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.blocking(move |shard, _| {
            shard.update(UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(scope(
                company,
                Some(cv),
            ))))?;
            shard.flush()?;
            Ok(())
        }))
    }

    fn search<'a>(
        &'a self,
        company: i64,
        cv: Option<i64>,
        ranking: Ranking,
        text: &'a str,
        dense: &'a [f32],
        limit: usize,
    ) -> StoreFuture<'a, Vec<Hit>> {
        let (text, dense) = (text.to_owned(), dense.to_vec());
        Box::pin(self.blocking(move |shard, bm25| {
            let query = match ranking {
                Ranking::Dense => NamedQuery { query: VectorInternal::Dense(dense), using: Some(DENSE.into()) },
                Ranking::Keywords => {
                    NamedQuery { query: VectorInternal::Sparse(bm25.embed_query(&text)), using: Some(SPARSE.into()) }
                }
            };
            let request = SearchRequestBuilder::new(QueryEnum::Nearest(query), limit)
                .filter(scope(company, cv))
                .with_payload(WithPayloadInterface::Bool(true))
                .build();
            let found = shard.search(request)?;
            Ok(found.into_iter().filter_map(|p| hit(&p.payload?.0, p.score)).collect())
        }))
    }

    fn count(&self, company: i64, cv: Option<i64>) -> StoreFuture<'_, usize> {
        Box::pin(self.blocking(move |shard, _| {
            let request = qdrant_edge::CountRequestBuilder::new().filter(scope(company, cv)).exact(true).build();
            Ok(shard.count(request)?)
        }))
    }
}
