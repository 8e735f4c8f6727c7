//! A Qdrant server (`vectors.url` / `QDRANT_URL`) through `qdrant-client` (gRPC, port
//! 6334): one collection with the same named vectors as the embedded engine ("dense",
//! cosine; "bm25", sparse with the server's IDF modifier) and integer indexes on
//! `company_id` and `cv_id`. The BM25 vectors are made here with the same tokenizer as
//! the embedded engine's, so both stores rank words alike. Every write waits until the
//! server has applied it.

use anyhow::Context as _;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder,
    Distance, FieldType, Filter, Modifier, NamedVectors, PointStruct, Query, QueryPointsBuilder,
    SparseVectorParamsBuilder, SparseVectorsConfigBuilder, UpsertPointsBuilder, VectorInput, VectorParamsBuilder,
    VectorsConfigBuilder,
};
use qdrant_client::{Payload, qdrant};
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};

use super::{
    ChunkPoint, DENSE, Hit, MAX_CHUNKS, Ranking, SPARSE, StoreFuture, VectorStore, hit, payload, point_number,
};

/// The chunks of every CV in one collection of a Qdrant server.
pub struct ServerStore {
    client: Qdrant,
    collection: String,
    bm25: EdgeBm25,
}

impl ServerStore {
    /// Connects to `url` and makes sure the collection exists (for vectors of
    /// `dimension`; an existing one of another dimension is refused).
    pub async fn connect(url: &str, api_key: &str, collection: &str, dimension: usize) -> anyhow::Result<Self> {
        let mut builder = Qdrant::from_url(url).timeout(std::time::Duration::from_secs(30));
        if !api_key.is_empty() {
            builder = builder.api_key(api_key.to_owned());
        }
        let client = builder.build().with_context(|| format!("connecting to Qdrant at {url}"))?;
        let exists = client.collection_exists(collection).await.with_context(|| format!("asking Qdrant at {url}"))?;
        if exists {
            let info = client.collection_info(collection).await?;
            let size =
                info.result.and_then(|r| r.config).and_then(|c| c.params).and_then(|p| p.vectors_config).and_then(
                    |v| match v.config? {
                        qdrant::vectors_config::Config::ParamsMap(map) => map.map.get(DENSE).map(|p| p.size),
                        qdrant::vectors_config::Config::Params(_) => None,
                    },
                );
            anyhow::ensure!(
                size == Some(dimension as u64),
                "Qdrant collection {collection} holds {DENSE} vectors of {size:?} dimensions, the model makes {dimension}: \
                 use another vectors.collection or re-index"
            );
        } else {
            let mut dense = VectorsConfigBuilder::default();
            dense.add_named_vector_params(DENSE, VectorParamsBuilder::new(dimension as u64, Distance::Cosine));
            let mut sparse = SparseVectorsConfigBuilder::default();
            sparse.add_named_vector_params(SPARSE, SparseVectorParamsBuilder::default().modifier(Modifier::Idf as i32));
            client
                .create_collection(
                    CreateCollectionBuilder::new(collection).vectors_config(dense).sparse_vectors_config(sparse),
                )
                .await
                .with_context(|| format!("creating Qdrant collection {collection}"))?;
            for field in ["company_id", "cv_id"] {
                client
                    .create_field_index(
                        CreateFieldIndexCollectionBuilder::new(collection, field, FieldType::Integer).wait(true),
                    )
                    .await
                    .with_context(|| format!("indexing {field} in Qdrant collection {collection}"))?;
            }
        }
        let bm25 = EdgeBm25::new(EdgeBm25Config::default()).map_err(|e| anyhow::anyhow!("BM25: {e}"))?;
        Ok(Self { client, collection: collection.to_owned(), bm25 })
    }

    /// Drops the collection (tests clean up with it).
    pub async fn drop_collection(&self) -> anyhow::Result<()> {
        self.client.delete_collection(&self.collection).await?;
        Ok(())
    }
}

fn scope(company: i64, cv: Option<i64>) -> Filter {
    let mut must = vec![Condition::matches("company_id", company)];
    if let Some(cv) = cv {
        must.push(Condition::matches("cv_id", cv));
    }
    Filter::must(must)
}

impl VectorStore for ServerStore {
    fn replace_cv(&self, company: i64, cv: i64, points: Vec<ChunkPoint>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            anyhow::ensure!(points.len() <= MAX_CHUNKS, "a CV may have at most {MAX_CHUNKS} chunks");
            self.client
                .delete_points(DeletePointsBuilder::new(&self.collection).points(scope(company, Some(cv))).wait(true))
                .await?;
            let mut structs = Vec::with_capacity(points.len());
            for p in points {
                let payload = Payload::try_from(payload(company, cv, &p))?;
                let sparse = self.bm25.embed_document(&p.text);
                let vectors = NamedVectors::default()
                    .add_vector(DENSE, p.dense)
                    .add_vector(SPARSE, qdrant::Vector::new_sparse(sparse.indices, sparse.values));
                structs.push(PointStruct::new(point_number(cv, p.chunk), vectors, payload));
            }
            if !structs.is_empty() {
                self.client.upsert_points(UpsertPointsBuilder::new(&self.collection, structs).wait(true)).await?;
            }
            Ok(())
        })
    }

    fn delete_cv(&self, company: i64, cv: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.client
                .delete_points(DeletePointsBuilder::new(&self.collection).points(scope(company, Some(cv))).wait(true))
                .await?;
            Ok(())
        })
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
        Box::pin(async move {
            let (input, using) = match ranking {
                Ranking::Dense => (VectorInput::new_dense(dense.to_vec()), DENSE),
                Ranking::Keywords => {
                    let sparse = self.bm25.embed_query(text);
                    (VectorInput::new_sparse(sparse.indices, sparse.values), SPARSE)
                }
            };
            let found = self
                .client
                .query(
                    QueryPointsBuilder::new(&self.collection)
                        .query(Query::new_nearest(input))
                        .using(using)
                        .filter(scope(company, cv))
                        .limit(limit as u64)
                        .with_payload(true),
                )
                .await?;
            Ok(found
                .result
                .into_iter()
                .filter_map(|p| {
                    let fields = p.payload.into_iter().map(|(name, value)| (name, value.into_json())).collect();
                    hit(&fields, p.score)
                })
                .collect())
        })
    }

    fn count(&self, company: i64, cv: Option<i64>) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let counted = self
                .client
                .count(CountPointsBuilder::new(&self.collection).filter(scope(company, cv)).exact(true))
                .await?;
            Ok(counted.result.map_or(0, |r| r.count as usize))
        })
    }
}
