//! The vector store's contract, run on the embedded engine always and on a Qdrant
//! server when `QDRANT_URL` names one (its gRPC port, e.g. http://127.0.0.1:6334); each
//! run on a collection of its own, dropped afterwards.

#![allow(clippy::unwrap_used)]

use cv_processor::vectors::{ChunkPoint, EdgeStore, Ranking, ServerStore, VectorStore};
use test_support::TempDir;

const DIMENSION: usize = 4;

fn point(chunk: usize, section: &str, text: &str, dense: [f32; DIMENSION]) -> ChunkPoint {
    ChunkPoint { chunk, section: section.to_owned(), text: text.to_owned(), dense: dense.to_vec() }
}

async fn contract(store: &dyn VectorStore) {
    let (acme, globex) = (1, 2);
    let rust = [1.0, 0.0, 0.0, 0.0];
    let nursing = [0.0, 1.0, 0.0, 0.0];
    let first_run = vec![
        point(0, "experience", "Built payment services in Rust and PostgreSQL", rust),
        point(1, "skills", "Kubernetes, Terraform, observability", [0.0, 0.0, 1.0, 0.0]),
    ];
    store.replace_cv(acme, 10, first_run.clone()).await.unwrap();
    // A redo (a crashed run done again) replaces rather than adds.
    store.replace_cv(acme, 10, first_run).await.unwrap();
    store
        .replace_cv(acme, 11, vec![point(0, "experience", "Intensive care nursing, ward rounds", nursing)])
        .await
        .unwrap();
    store
        .replace_cv(globex, 20, vec![point(0, "experience", "Rust services for trading in Rust", rust)])
        .await
        .unwrap();
    assert_eq!(store.count(acme, None).await.unwrap(), 3);
    assert_eq!(store.count(acme, Some(10)).await.unwrap(), 2);
    assert_eq!(store.count(globex, None).await.unwrap(), 1);

    // Meaning: the Rust chunk first, and only the company's own.
    let hits = store.search(acme, None, Ranking::Dense, "", &[0.9, 0.1, 0.0, 0.0], 10).await.unwrap();
    assert_eq!((hits[0].cv_id, hits[0].chunk, hits[0].section.as_str()), (10, 0, "experience"), "{hits:?}");
    assert!(hits[0].text.contains("payment services"));
    assert!(hits.iter().all(|h| h.cv_id != 20), "another company's chunk: {hits:?}");
    assert!(hits[0].score > hits[1].score);
    // Words: BM25 finds the chunk that has them.
    let hits = store.search(acme, None, Ranking::Keywords, "nursing ward", &[0.0; DIMENSION], 10).await.unwrap();
    assert_eq!((hits.len(), hits[0].cv_id), (1, 11), "{hits:?}");
    let hits = store.search(acme, Some(10), Ranking::Keywords, "Terraform", &[0.0; DIMENSION], 10).await.unwrap();
    assert_eq!((hits.len(), hits[0].chunk), (1, 1), "{hits:?}");

    // A redo with fewer chunks leaves none of the old ones; delete leaves nothing.
    store.replace_cv(acme, 10, vec![point(0, "summary", "Rust engineer", rust)]).await.unwrap();
    assert_eq!(store.count(acme, Some(10)).await.unwrap(), 1);
    store.delete_cv(acme, 10).await.unwrap();
    assert_eq!(store.count(acme, Some(10)).await.unwrap(), 0);
    assert_eq!(store.count(globex, None).await.unwrap(), 1, "a delete reached another company");
}

#[tokio::test]
async fn the_embedded_engine_keeps_the_contract_and_survives_a_reopen() {
    let dir = TempDir::new("vectors").unwrap();
    {
        let store = EdgeStore::open(&dir.path, DIMENSION).unwrap();
        contract(&store).await;
        store.optimize().await.unwrap();
    }
    let reopened = EdgeStore::open(&dir.path, DIMENSION).unwrap();
    assert_eq!(reopened.count(1, None).await.unwrap(), 1);
    assert_eq!(reopened.count(2, None).await.unwrap(), 1);
}

#[tokio::test]
async fn a_qdrant_server_keeps_the_same_contract_when_one_is_reachable() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!("skipped: QDRANT_URL is not set (no Qdrant server to test against)");
        return;
    };
    let collection = format!("test_{}", test_support::unique_suffix());
    let store = ServerStore::connect(&url, "", &collection, DIMENSION).await.unwrap();
    contract(&store).await;
    // The collection is refused for a model of another dimension.
    let err = ServerStore::connect(&url, "", &collection, DIMENSION + 1).await.err().unwrap();
    assert!(format!("{err:#}").contains("dimensions"), "{err:#}");
    store.drop_collection().await.unwrap();
}
