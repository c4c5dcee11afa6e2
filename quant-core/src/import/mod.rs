//! Importers from other frameworks' graph formats.

pub mod tf;
