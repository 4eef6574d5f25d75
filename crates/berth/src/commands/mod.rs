//! One module per `berth` subcommand.
pub mod gc;
pub mod server;
