//! Helpers shared by the crate's unit tests.

pub(crate) mod datadriven;
