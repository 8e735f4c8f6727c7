//! The migrations are embedded at compile time (`embed_migrations!`); a migration added,
//! changed or removed must rebuild this crate, which cargo does not know on its own.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations-main");
    println!("cargo:rerun-if-changed=../../migrations-analytics");
}
