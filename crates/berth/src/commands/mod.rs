//! One module per `berth` subcommand.
pub mod build;
mod client;
pub mod cluster;
pub mod down;
pub mod gc;
pub mod images;
pub mod instances;
pub mod logs;
pub mod proxy;
pub mod ps;
pub mod pull;
pub mod push;
pub mod run;
pub mod server;
pub mod service;
pub mod shim;
pub mod stop;
mod tasks;
