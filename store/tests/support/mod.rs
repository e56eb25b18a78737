//! The real servers the tests use live in `mirrorfleet_store::testing` (shared by every crate).

#![allow(unused_imports)]

pub use mirrorfleet_store::testing::*;
