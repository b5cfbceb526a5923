//! Images: verified import of OCI images into a content-addressed store of unpacked layers.
//!
//! `layout` reads an OCI image layout, `import` streams each layer once through two sha256
//! hashers and the decompressor into `unpack`, which writes it safely inside a temporary
//! directory that `store` renames into place only when both digests matched.

pub mod auth;
pub mod check;
pub mod commit;
mod containers_storage;
pub mod digest;
pub mod error;
pub mod export;
pub mod import;
mod install;
pub mod layout;
pub mod oci;
pub mod opened;
pub mod pack;
pub mod progress;
pub mod registries_conf;
pub mod registry;
pub mod sources;
pub mod store;
pub mod tree;
pub mod unpack;
pub mod worker;

pub use digest::Digest;
pub use error::ImageError;
pub use import::{Request, check, extract, import, remove};
pub use store::{ImageRecord, Layout, Store};
pub use unpack::UnpackMode;
