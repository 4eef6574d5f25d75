//! One module per `berth` subcommand.
pub mod build;
mod client;
pub mod gc;
pub mod images;
pub mod pull;
pub mod push;
pub mod server;
pub mod shim;
